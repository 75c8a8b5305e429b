"""`forge expand` with a deterministic in-process JsonClient: malformed, duplicate, near-duplicate, copied,
off-length and off-shape examples are dropped, counted by reason and never written; kept ones are marked
and prepare keeps them out of val and test (the synthetic rule of data/prepare/splits.py)."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from forgellm.advisor.llm import LLMAdvisor
from forgellm.cli.main import app
from forgellm.config.schema import RecipeSection
from forgellm.errors import ErrorCode, ForgeError
from forgellm.synthetic.expand import expand_file
from forgellm.synthetic.run import expand_data
from synthetic.support import qa_project, qa_rows, write_qa

runner = CliRunner()
RECIPE = RecipeSection(columns={"user": "question", "assistant": "answer"})
_SEEDS = re.compile(r"<<<UNTRUSTED-SEEDS-\w+>>>\n(.*?)\n<<<END-UNTRUSTED-SEEDS", re.DOTALL)

GOOD = [
    {"question": "How do I export my data?", "answer": "Account > Privacy > Export builds a ZIP archive for you."},
    {"question": "Can I pause deliveries?", "answer": "Yes: Orders > Deliveries > Pause, for up to eight weeks."},
    {"question": "Why was my card declined?", "answer": "Banks decline for limits or expiry; try another card first."},
    {"question": "Where do I see my points?", "answer": "Your loyalty points show on the Rewards tab of your profile."},
]


class ScriptedClient:
    """Answers each request with the next scripted batch; a batch may be a function of the seeds sent."""

    provider, model = "openai", "scripted"

    def __init__(self, batches: list) -> None:
        self.batches = list(batches)
        self.prompts: list[str] = []

    def generate_json(self, *, system: str, prompt: str, schema) -> str:
        self.prompts.append(prompt)
        assert "examples" in schema.model_json_schema()["properties"]  # the typed schema goes to the server
        batch = self.batches.pop(0) if self.batches else {"examples": []}
        if callable(batch):
            batch = batch(json.loads(_SEEDS.search(prompt).group(1)))
        return batch if isinstance(batch, str) else json.dumps(batch)


def _copied(seeds: list[dict]) -> dict:
    """A seed's answer pasted under a new question (plus a greeting), and a seed's question with a new answer:
    both copying, neither a duplicate nor a near-duplicate as a whole."""
    return {"examples": [
        {"question": "Something else entirely, please help?", "answer": "Hello! " + seeds[0]["answer"]},
        {"question": seeds[1]["question"], "answer": "Our team answers this one by phone, weekdays from 9 to 17."},
    ]}  # fmt: skip


def _bad_batches() -> list:
    row = qa_rows()[0]
    near = {"question": row["question"], "answer": row["answer"].replace("follow", "then follow")}
    return [
        "this is not JSON {",  # a whole answer unusable
        {"examples": [
            "a string, not an object",
            {"question": "Missing its answer?"},
            {"question": "An extra field?", "answer": "Yes, one too many fields here.", "id": 7},
            {"question": "", "answer": "An empty question the recipe cannot use as a turn."},
            {"question": row["question"].upper(), "answer": "  " + row["answer"]},  # exact duplicate (normalized)
            near,  # near-duplicate of a data row
            {"question": "Hi?", "answer": "ok"},  # shorter than any row of the data
            {"question": "Tell me everything?", "answer": "word " * 400},  # longer than any row
            GOOD[0],
            dict(GOOD[0]),  # a duplicate of an example kept a moment ago
        ]},
        _copied,
        {"examples": GOOD[1:]},
    ]  # fmt: skip


def test_every_bad_example_is_dropped_counted_and_never_written(tmp_path):
    data = write_qa(tmp_path)
    before = data.read_bytes()
    client = ScriptedClient(_bad_batches())
    report = expand_file(data, 16, LLMAdvisor(client), format="qa", recipe=RECIPE, batch=10, seeds_per_request=3)
    assert report.unusable_answers == 1
    assert report.dropped == {
        "invalid": 4, "too_short": 1, "too_long": 1, "duplicate": 2, "near_duplicate": 1, "copied": 2,
    }  # fmt: skip
    assert report.kept == 4 and report.generated == 15 and report.output is not None
    assert data.read_bytes() == before  # the user's file is never touched
    lines = [json.loads(line) for line in (tmp_path / "support.expanded.jsonl").read_text().splitlines()]
    assert lines[:12] == qa_rows()  # the data's rows first, unchanged
    synthetic = lines[12:]
    assert [{k: r[k] for k in ("question", "answer")} for r in synthetic] == GOOD
    data_lines = set(range(1, 13))
    for row in synthetic:
        assert row["synthetic"] is True and len(row["synthetic_seeds"]) == 3
        assert set(row["synthetic_seeds"]) <= data_lines
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind
    assert "seed examples" in client.prompts[0] and "UNTRUSTED-SEEDS" in client.prompts[0]


def test_nothing_kept_means_nothing_written(tmp_path):
    data = write_qa(tmp_path)
    client = ScriptedClient(["{broken"] * 3 + [{"examples": [qa_rows()[1]]}] * 20)
    report = expand_file(data, 14, LLMAdvisor(client), format="qa", recipe=RECIPE, batch=2)
    assert report.kept == 0 and report.output is None and report.stopped and report.dropped["duplicate"] > 0
    assert not (tmp_path / "support.expanded.jsonl").exists()


def test_the_rules_advisor_cannot_expand_and_says_how_to_configure_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_qa(tmp_path)
    with pytest.raises(ForgeError) as caught:
        expand_data(tmp_path / "support.jsonl", 20)
    assert caught.value.code == ErrorCode.ADVISOR_CANNOT and "advisor.provider" in caught.value.fix
    result = runner.invoke(app, ["expand", "support.jsonl", "--to", "20"])
    assert result.exit_code == 1 and "advisor-cannot" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "support.expanded.jsonl").exists()


def test_a_target_below_the_data_is_refused(tmp_path):
    data = write_qa(tmp_path)
    with pytest.raises(ForgeError) as caught:
        expand_file(data, 12, LLMAdvisor(ScriptedClient([])), format="qa", recipe=RECIPE)
    assert caught.value.code == ErrorCode.USAGE_INVALID and "--to" in caught.value.fix


def _many_good(count: int) -> list[dict]:
    colours = ["red", "blue", "green", "amber", "violet", "teal", "olive", "coral", "navy", "ivory", "plum", "sand"]
    return [
        {"question": f"Is the {c} model {n} in stock?", "answer": f"The {c} one ({n * 7} units) ships in {n} days."}
        for n, c in enumerate(colours[:count], start=2)
    ]


def test_prepare_puts_synthetic_rows_in_train_only(tmp_path, tiny_causal_lm_dir):
    from stage_support import staged

    from forgellm.data.prepare.run import prepare_dataset
    from forgellm.data.read.formats import detect_format
    from forgellm.data.read.readers import open_dataset, sample_records

    project = qa_project(tmp_path / "project", tiny_causal_lm_dir)
    data = write_qa(project)
    report = expand_file(data, 24, LLMAdvisor(ScriptedClient([{"examples": _many_good(12)}])), format="qa",
                         recipe=RECIPE, batch=12)  # fmt: skip
    assert report.kept == 12
    expanded = project / "support.expanded.jsonl"
    # The marks are metadata: the expanded file is read the same way as the original.
    detection = detect_format(sample_records(open_dataset(expanded), 100), kind="jsonl")
    assert detection.format == "qa" and detection.recipe.columns == {"user": "question", "assistant": "answer"}
    result = prepare_dataset(*staged(project), expanded)
    splits = {}
    for split in ("train", "val", "test"):
        rows = [json.loads(line) for line in (result.output_dir / f"{split}.jsonl").read_text().splitlines()]
        splits[split] = rows
    assert all(not row.get("synthetic") for split in ("val", "test") for row in splits[split])
    assert sum(bool(row.get("synthetic")) for row in splits["train"]) == 12
    assert splits["val"] or splits["test"]  # real rows still reach the held-out splits (50/25/25)


def test_ignite_suggests_expansion_for_small_data_and_reuses_an_expansion(tmp_path, monkeypatch):
    from forgellm.synthetic.run import expanded_for_ignite, small_data_hint

    data = write_qa(tmp_path)
    hint = small_data_hint(data, "forge ignite support.jsonl GOAL --expand 500")
    assert hint and "only ~12 rows" in hint and "--expand 500" in hint
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"q": f"q{i}", "a": f"a{i}"}) + "\n" for i in range(300)))
    assert small_data_hint(big, "x") is None
    # An expansion made earlier is reused, so a re-run of ignite resumes on the same data.
    (tmp_path / "support.expanded.jsonl").write_text(data.read_text())
    assert expanded_for_ignite(data, 50) == (tmp_path / "support.expanded.jsonl", None)
    # --expand with the rules advisor stops at once, with the fix, before any stage runs.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "support.expanded.jsonl").unlink()
    result = runner.invoke(app, ["ignite", "support.jsonl", "A support bot", "--expand", "50", "--yes"])
    assert result.exit_code == 1 and "advisor-cannot" in result.output
    assert not (tmp_path / "forge.yaml").exists()


def test_conversations_keep_their_shape_and_the_schema_suits_gemini(tmp_path):
    from forgellm.advisor.gemini import gemini_json_schema

    def chat(question: str, answer: str) -> dict:
        return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}

    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(chat(r["question"], r["answer"])) + "\n" for r in qa_rows()))
    new = chat("Can I change my username?", "Yes, once a month under Profile > Edit username.")
    wrong = {"messages": [{"speaker": "user", "text": "Where is my order?"}]}  # the file's keys are role/content
    client = ScriptedClient([{"examples": [wrong, new]}])
    recipe = RecipeSection(columns={"messages": "messages"})
    report = expand_file(data, 13, LLMAdvisor(client), format="messages", recipe=recipe, batch=2)
    assert (report.kept, report.dropped["invalid"]) == (1, 1)
    assert json.loads((tmp_path / "chats.expanded.jsonl").read_text().splitlines()[-1])["messages"] == new["messages"]
    from forgellm.advisor.schemas import ExamplesRequest
    from forgellm.synthetic.shape import example_model

    schema = gemini_json_schema(ExamplesRequest([], 2, "messages", example_model([new], ["messages"])).answer_schema())
    turn = schema["properties"]["examples"]["items"]["properties"]["messages"]["items"]
    assert turn["required"] == ["content", "role"] and turn["additionalProperties"] is False


def test_forge_expand_over_http_prints_the_report_and_writes_the_file(tmp_path, tiny_causal_lm_dir):
    """The command as a user runs it: forge.yaml's OpenAI-compatible advisor (a scripted local HTTP server)."""
    from advisor.servers import Reply, openai_server

    script = [Reply.json({"examples": [GOOD[0], qa_rows()[2]]}), Reply.json({"examples": GOOD[1:3]})]
    with openai_server(script) as server:
        advisor = {"provider": "openai", "base_url": server.url, "model": "scripted", "max_retries": 0}
        project = qa_project(tmp_path / "project", tiny_causal_lm_dir, advisor=advisor)
        data = write_qa(project)
        result = runner.invoke(app, ["expand", str(data), "--to", "15", "--batch", "2", "-C", str(project)])
    assert result.exit_code == 0, result.output
    compact = "".join(result.output.split())  # rich wraps long lines, even inside a path
    assert "Kept3" in compact and "duplicate1" in compact and "forgeprepare" in compact
    assert "support.expanded.jsonl" in compact and "Senttoscripted(openai)" in compact
    assert len((project / "support.expanded.jsonl").read_text().splitlines()) == 15
