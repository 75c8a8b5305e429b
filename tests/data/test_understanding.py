"""Data understanding on shapes and bad input: roles by name in several languages and by content, several
user columns in one turn, the recipe fit check, and the refusal that says what to fill in when nothing fits
(plan stops, ignite stops there, forge.yaml is left as it was)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from forgellm.advisor.rules import RulesAdvisor
from forgellm.cli.main import app
from forgellm.config.schema import AdvisorSection, DataSection, RecipeSection
from forgellm.data.prepare.fit import check_fit
from forgellm.data.prepare.recipe import to_example
from forgellm.data.read.formats import detect_format
from forgellm.data.read.records import Record
from forgellm.errors import ErrorCode, ForgeError
from forgellm.planning.profile import profile_data

runner = CliRunner()


def _records(rows: list[dict]) -> list[Record]:
    return [Record(line=i + 2, fields=dict(row)) for i, row in enumerate(rows)]


def _csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _plan(path: Path, goal: str | None = None):
    return profile_data(path, goal, RulesAdvisor(), AdvisorSection(), DataSection())


# fmt: off
@pytest.mark.parametrize(
    ("user", "assistant", "question", "answer"),
    [
        ("Frage", "Antwort", "Wie setze ich mein Passwort zurück?",
         "Gehen Sie zu Einstellungen und wählen Sie Passwort."),
        ("pregunta", "respuesta", "¿Cómo cambio mi dirección de envío?",
         "Lo sentimos: puede cambiarla en Mi cuenta."),
        ("demande", "réponse", "Comment annuler ma commande ?",
         "Nous avons annulé votre commande, merci de votre patience."),
        ("質問", "回答", "パスワードを忘れました。どうすればいいですか？",
         "お問い合わせありがとうございます。設定画面から再設定できます。"),
        ("customer_query", "agent_reply", "Where is my parcel?", "Thank you for contacting us. It ships tomorrow."),
    ],
)
# fmt: on
def test_roles_are_found_by_name_in_several_languages(user, assistant, question, answer):
    rows = [{"ticket_id": f"T-{i}", user: f"{question} ({i})", assistant: f"{answer} ({i})"} for i in range(30)]
    found = detect_format(_records(rows))
    assert found.format == "qa"
    assert found.recipe.columns["user"] == user and found.recipe.columns["assistant"] == assistant
    assert "ticket_id" not in found.recipe.column_names()  # an id is metadata, never a role


def test_roles_are_found_by_content_when_the_names_say_nothing():
    rows = [
        {"col_a": f"Hello, my order {i} has not arrived yet, can you help?",
         "col_b": f"We are sorry about order {i}. Thank you for contacting us: it was shipped today and arrives "
                  "within two days. You can track it from your account page.",
         "col_c": "2024-05-0" + str(i % 9 + 1)}
        for i in range(30)
    ]  # fmt: skip
    found = detect_format(_records(rows))
    assert found.format == "qa"
    assert found.recipe.columns["user"] == "col_a" and found.recipe.columns["assistant"] == "col_b"
    assert "questions" in found.reasons[0] and "read like replies" in found.reasons[0]


def test_subject_and_body_form_one_user_turn_with_their_names_as_labels():
    rows = [{"Subject": f"Refund {i}", "Body": f"I was charged twice for order {i}, please refund me.",
             "Priority": ["high", "low"][i % 2], "Answer": f"We have refunded the second charge of order {i}."}
            for i in range(30)]  # fmt: skip
    found = detect_format(_records(rows))
    assert found.recipe.columns["user"] == ["Subject", "Body"]
    assert found.recipe.columns.get("label") == "Priority"  # metadata kept for splits, not in the turn
    example = to_example(_records(rows)[0], found.format, found.recipe)
    assert example.messages[0] == {
        "role": "user", "content": "Subject: Refund 0\n\nBody: I was charged twice for order 0, please refund me."
    }  # fmt: skip


def test_classification_when_there_is_no_answer_column(tmp_path):
    rows = [{"text": f"My card {i} was declined at the shop" if i % 3 else f"How do I top up {i} euros?",
             "intent": "card_declined" if i % 3 else "top_up"} for i in range(60)]  # fmt: skip
    profile = _plan(_csv(tmp_path / "intents.csv", rows))
    assert profile.format == "classification" and profile.task_type == "classification"
    assert profile.recipe.columns == {"user": "text", "label": "intent"}
    assert "card_declined, top_up" in profile.recipe.instruction
    example = to_example(_records(rows)[1], profile.format, profile.recipe)
    assert example.messages[-1] == {"role": "assistant", "content": "card_declined"}
    assert example.label == "card_declined"


def test_a_label_column_with_500_values_is_not_a_classifier():
    rows = [{"text": f"Customer message number {i} about an order that went wrong somewhere", "code": f"L{i % 500}"}
            for i in range(1000)]  # fmt: skip
    found = detect_format(_records(rows))
    assert all(d.format != "classification" for d in found.readings())


def test_preference_pairs_train_on_chosen_and_keep_the_rejected_side():
    rows = [{"prompt": f"Write a greeting {i}", "chosen": f"Hello and welcome, friend {i}!", "rejected": "no"}
            for i in range(10)]  # fmt: skip
    found = detect_format(_records(rows))
    assert found.format == "preference"
    example = to_example(_records(rows)[0], found.format, found.recipe)
    assert [m["content"] for m in example.messages] == ["Write a greeting 0", "Hello and welcome, friend 0!"]
    assert example.extra["rejected"][-1] == {"role": "assistant", "content": "no"}


def test_a_csv_with_no_text_column_is_refused_with_the_lines_to_fill_in(tmp_path):
    rows = [{"id": i, "amount": i * 3.5, "date": f"2024-01-{i % 28 + 1:02d}"} for i in range(40)]
    with pytest.raises(ForgeError) as refused:
        _plan(_csv(tmp_path / "numbers.csv", rows))
    error = refused.value
    assert error.code == ErrorCode.DATA_NO_RECIPE
    assert any(d == "amount: '0.0' | '3.5'" for d in error.details)  # each column, two samples
    assert "data:\n  format: qa\n  recipe:\n    columns:\n      user: <" in error.fix


def test_every_answer_empty_is_refused_and_says_so(tmp_path):
    rows = [{"question": f"How do I reset password {i}?", "answer": ""} for i in range(40)]
    with pytest.raises(ForgeError) as refused:
        _plan(_csv(tmp_path / "empty_answers.csv", rows))
    assert refused.value.code == ErrorCode.DATA_NO_RECIPE
    assert "answer: (empty in all 40 sampled rows)" in refused.value.details


def test_a_kept_recipe_that_names_a_missing_column_is_refused(tmp_path):
    data = _csv(tmp_path / "qa.csv", [{"q": f"Question {i}?", "a": f"Answer {i}."} for i in range(20)])
    recipe = RecipeSection(columns={"user": "question", "assistant": "a"})
    kept = DataSection(source=str(data), format="qa", recipe=recipe)
    with pytest.raises(ForgeError) as refused:
        profile_data(data, None, RulesAdvisor(), AdvisorSection(), kept)
    assert refused.value.code == ErrorCode.DATA_RECIPE_MISMATCH and "'question'" in refused.value.message
    assert "data.format: auto" in refused.value.fix


def test_the_fit_check_applies_the_recipe_as_prepare_does():
    records = _records([{"q": f"Q{i}?", "a": "" if i % 2 else f"A{i}"} for i in range(20)])
    half = check_fit(records, "qa", RecipeSection(columns={"user": "q", "assistant": "a"}))
    assert half.made == 10 and half.empty == 10 and half.failed == 0 and half.ok  # empty rows are dropped, not errors
    missing = check_fit(records, "qa", RecipeSection(columns={"user": "question", "assistant": "a"}))
    assert missing.missing == ["question"] and not missing.ok


def test_a_transcript_recipe_whose_speakers_never_occur_names_the_lines_seen():
    record = Record(line=2, fields={"text": "Kunde: Hallo, mein Paket fehlt.\nAgent: Das tut uns leid."})
    speakers = {"user": ["User:"], "assistant": ["Bot:"]}
    recipe = RecipeSection(columns={"text": "text"}, transcript={"speakers": speakers})
    fit = check_fit([record], "transcript", recipe)
    assert not fit.ok
    reason = next(iter(fit.reasons))
    assert "Kunde: Hallo" in reason and "data.recipe.transcript.speakers" in reason


def test_plan_and_ignite_stop_at_a_file_no_recipe_fits_and_leave_forge_yaml_alone(tmp_path):
    data = _csv(tmp_path / "numbers.csv", [{"id": i, "amount": i * 2} for i in range(30)])
    project = tmp_path / "p"
    plan = runner.invoke(app, ["plan", "Make a support bot", "--data", str(data), "-C", str(project)])
    assert plan.exit_code == 1 and "[data-no-recipe]" in plan.output and "user: <" in plan.output
    assert not (project / "forge.yaml").exists()
    ignite = runner.invoke(app, ["ignite", str(data), "Make a support bot", "--yes", "-C", str(project)])
    assert ignite.exit_code == 1 and "[data-no-recipe]" in ignite.output and "Traceback" not in ignite.output
    state = project / ".forge" / "ignite.json"
    assert not state.exists() or "plan" not in json.loads(state.read_text()).get("done", {})


def test_study_shows_the_shape_it_chose_and_the_alternatives_with_scores(tmp_path, monkeypatch):
    data = Path(__file__).parent / "real" / "tickets_multilang.csv"
    monkeypatch.chdir(tmp_path)  # outside a project the reports go to ./reports
    result = runner.invoke(app, ["study", str(data)])
    assert result.exit_code == 0, result.output[-2000:]
    assert "Shape: qa (score 0.90)" in result.output and "subject' + 'body'" in result.output
    assert "also considered: classification" in result.output
    shape = json.loads((tmp_path / "reports" / "study.json").read_text())["shape"]
    assert shape["fits"] is True and shape["recipe"]["columns"]["user"] == ["subject", "body"]
    assert {"classification", "text"} <= {a["format"] for a in shape["alternatives"]}
    assert all(0 < a["confidence"] < shape["confidence"] for a in shape["alternatives"])
    assert "<h2>Shape</h2>" in (tmp_path / "reports" / "study.html").read_text()


def test_prepare_with_format_auto_refuses_a_file_no_recipe_fits(tmp_path, make_project):
    from stage_support import staged

    from forgellm.data.prepare.run import prepare_dataset

    project = make_project()
    data = _csv(tmp_path / "numbers.csv", [{"id": i, "amount": i * 2} for i in range(30)])
    before = (project / "forge.yaml").read_bytes()
    with pytest.raises(ForgeError) as refused:
        prepare_dataset(*staged(project), data)
    assert refused.value.code == ErrorCode.DATA_NO_RECIPE
    assert (project / "forge.yaml").read_bytes() == before


def test_the_goal_chooses_the_label_and_brings_named_metadata_into_the_turn(tmp_path):
    rows = [{"subject": f"Login problem {i}", "body": f"I cannot log in to account {i} since this morning.",
             "queue": ["Technical Support", "Billing"][i % 2], "priority": ["high", "low", "medium"][i % 3],
             "product": ["Router X", "App Y"][i % 2]} for i in range(60)]  # fmt: skip
    data = _csv(tmp_path / "tickets.csv", rows)
    assert _plan(data, "Classify tickets by queue").recipe.columns["label"] == "queue"
    by_priority = _plan(data, "Classify each ticket by its priority, using the product too")
    assert by_priority.format == "classification" and by_priority.recipe.columns["label"] == "priority"
    assert by_priority.recipe.columns["user"] == ["subject", "body", "product"]
    assert "high, low, medium" in by_priority.recipe.instruction


def test_nested_reply_trees_without_ids_become_one_conversation_per_path():
    from forgellm.data.read.threads import link_threads

    tree = {"author": "ana", "body": "My router blinks red. What now?", "children": [
        {"author": "support", "body": "Unplug it for ten seconds, then plug it back in.", "children": [
            {"author": "ana", "body": "Still red.", "children": [
                {"author": "support", "body": "Then it needs replacing: we will send a new one."}]}]},
        {"author": "support", "body": "Is the cable firmly in the WAN port?", "children": []}]}  # fmt: skip
    records = [Record(line=2, fields={"post": tree}), Record(line=3, fields={"post": "not a tree"})]
    found = detect_format(records[:1] * 3)
    assert found.format == "thread" and found.recipe.columns["tree"] == "post"
    assert found.recipe.columns["author"] == "author" and found.recipe.columns["text"] == "body"
    linked = list(link_threads(records, found.recipe))
    conversations = [r for r in linked if isinstance(r, Record)]
    assert [len(c.fields["messages"]) for c in conversations] == [4, 2]
    assert [m["role"] for m in conversations[0].fields["messages"]] == ["user", "assistant", "user", "assistant"]
    [rejected] = [r for r in linked if not isinstance(r, Record)]
    assert rejected.line == 3 and "holds no message object" in rejected.reason


def test_two_subject_like_columns_and_an_answer_still_make_one_user_turn():
    rows = [{"subject": f"Order {i} late", "title": f"Where is parcel {i}?",
             "answer": f"Thank you for contacting us: parcel {i} arrives tomorrow."} for i in range(20)]  # fmt: skip
    found = detect_format(_records(rows))
    assert found.format == "qa" and found.recipe.columns["assistant"] == "answer"
    assert sorted(found.recipe.columns["user"]) == ["subject", "title"]
