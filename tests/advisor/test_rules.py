"""The offline rules advisor: format from the detection, task type from the goal's words and the data."""

from __future__ import annotations

import pytest

from forgellm.advisor.recipes import recipe_from_proposal
from forgellm.advisor.rules import RulesAdvisor, task_from_goal
from forgellm.advisor.sampling import build_data_request
from forgellm.advisor.schemas import DataRequest, DiagnosisRequest, ScriptRequest
from forgellm.config.schema import ForgeConfig
from forgellm.data.read.formats import detect_format
from forgellm.data.read.records import Record
from forgellm.errors import ForgeError

QA_ROWS = [
    {"question": "How do I reset my password?", "answer": "Open Settings, choose Security and press Reset password."},
    {
        "question": "Where is my order?",
        "answer": "Your order ships within two days; the tracking link is in your mail.",
    },
    {"question": "Can I change my address?", "answer": "Yes: open the order and edit the delivery address there."},
]


def _request(rows, goal=None, kind="csv", hint=None) -> DataRequest:
    records = [Record(line=i + 2, fields=row) for i, row in enumerate(rows)]
    return build_data_request(
        records, file_name="data.csv", kind=kind, goal=goal, hint=hint, sample_rows=10, redact_pii=False
    )


def _columns(proposal) -> dict[str, str]:
    return {c.field: c.column for c in proposal.columns}


@pytest.mark.parametrize(
    ("goal", "task"),
    [
        ("Make a customer support bot", "chat"),
        ("Einen Kundendienst-Bot für unseren Shop bauen", "chat"),
        ("Quiero un bot de soporte para mi tienda", "chat"),
        ("Un assistant pour le service client", "chat"),
        ("Classify support tickets by department", "classification"),
        ("Kategorisiere eingehende E-Mails", "classification"),
        ("Resumir artículos de noticias", "summarization"),
        ("Extract invoice numbers and totals from emails", "extraction"),
        ("Help me write Python code for data pipelines", "code"),
        ("Answer both questions about our product manual", "qa"),
        ("客服机器人", "chat"),
        ("Make it better", None),
        (None, None),
    ],
)
def test_task_from_goal_words_in_several_languages(goal, task):
    assert task_from_goal(goal) == task


def test_question_answer_rows_with_a_support_goal_become_a_chat_recipe():
    request = _request(QA_ROWS, goal="Make a customer support bot")
    proposal = RulesAdvisor().understand_data(request)
    assert proposal.format == "qa"
    assert proposal.task_type == "chat"
    assert _columns(proposal) == {"user": "question", "assistant": "answer"}
    fmt, recipe = recipe_from_proposal(proposal, [c["name"] for c in request.columns])
    assert fmt == "qa" and recipe.columns == {"user": "question", "assistant": "answer"}


def test_without_a_goal_the_data_decides_the_task():
    assert RulesAdvisor().understand_data(_request(QA_ROWS)).task_type == "qa"
    labelled = [
        {"text": f"My package {i} never arrived and nobody answers my mails", "label": ["shipping", "refund"][i % 2]}
        for i in range(8)
    ]
    proposal = RulesAdvisor().understand_data(_request(labelled))
    assert proposal.task_type == "classification"
    assert proposal.format == "classification"
    assert _columns(proposal) == {"user": "text", "label": "label"}
    assert proposal.instruction == (
        "Classify the following text as one of: refund, shipping. Answer with the label only."
    )
    recipe_from_proposal(proposal, ["text", "label"])  # a recipe prepare can apply
    code_rows = [
        {"question": f"How do I sum a list number {i} in Python?", "answer": f"```python\ntotal = sum(values_{i})\n```"}
        for i in range(4)
    ]
    assert RulesAdvisor().understand_data(_request(code_rows)).task_type == "code"


def test_documents_become_continued_pretraining_whatever_the_goal():
    docs = [{"text": "Chapter one. " * 60, "path": f"doc{i}.txt"} for i in range(3)]
    proposal = RulesAdvisor().understand_data(_request(docs, goal="Make a support bot", kind="text"))
    assert proposal.format == "text"
    assert proposal.task_type == "cpt"


def test_the_hint_is_used_instead_of_detecting_again():
    rows = [{"instr": "Translate 'cat' to German", "out": "Katze"}, {"instr": "Translate 'dog'", "out": "Hund"}]
    hint = {
        "format": "alpaca",
        "recipe": {"columns": {"user": "instr", "assistant": "out"}, "system_prompt": "You translate."},
        "confidence": 0.9,
        "reasons": ["set by hand"],
    }
    proposal = RulesAdvisor().understand_data(_request(rows, hint=hint))
    assert proposal.format == "alpaca"
    assert _columns(proposal) == {"user": "instr", "assistant": "out"}
    assert proposal.system_prompt == "You translate."
    assert "set by hand" in proposal.reasons


def test_a_detected_transcript_round_trips_into_a_recipe_with_its_speakers():
    text = "\n".join(f"## me\nQuestion {i}?\n## chatgpt\nAnswer number {i}." for i in range(4))
    records = [Record(line=1, fields={"text": text, "path": f"chat{i}.md"}) for i in range(3)]
    detection = detect_format(records, kind="markdown")
    assert detection.format == "transcript"
    request = build_data_request(
        records,
        file_name="chats",
        kind="markdown",
        goal=None,
        hint=detection.to_dict(),
        sample_rows=3,
        redact_pii=False,
    )
    proposal = RulesAdvisor().understand_data(request)
    fmt, recipe = recipe_from_proposal(proposal, ["text", "path"])
    assert fmt == "transcript"
    assert recipe.transcript.speakers == detection.recipe.transcript.speakers
    assert proposal.task_type == "chat"


def test_the_same_request_gives_the_same_answer():
    request = _request(QA_ROWS, goal="FAQ bot")
    assert RulesAdvisor().understand_data(request) == RulesAdvisor().understand_data(request)


def test_diagnose_delegates_to_the_known_failures():
    config = ForgeConfig().model_dump(mode="json")
    request = DiagnosisRequest(stage="train", error="MemoryError", log_tail="Traceback ...\nMemoryError", config=config)
    fix = RulesAdvisor().diagnose(request)
    assert fix is not None and fix.problem == "oom"
    unknown = DiagnosisRequest(stage="train", error="something odd", log_tail="", config=config)
    assert RulesAdvisor().diagnose(unknown) is None


def test_the_rules_cannot_write_scripts_and_say_what_can():
    with pytest.raises(ForgeError) as info:
        RulesAdvisor().write_script(ScriptRequest(instructions="split", input_name="in.txt", kind="text", rows=[]))
    assert "forge login --provider gemini" in info.value.fix
    assert "advisor.provider" in info.value.fix


def test_a_classification_goal_on_a_question_answer_table_answers_with_the_label():
    rows = [
        {
            "description": f"My order {i} arrived broken and I want my money back",
            "reply": "Sorry! We refund it.",
            "ticket type": ["Refund request", "Product inquiry"][i % 2],
        }
        for i in range(6)
    ]
    request = _request(rows, goal="Classify tickets by type")
    proposal = RulesAdvisor().understand_data(request)
    assert proposal.task_type == "classification" and proposal.format == "classification"
    assert _columns(proposal) == {"user": "description", "label": "ticket type"}
    assert "Refund request" in proposal.instruction and "the goal asks to classify" in proposal.reasons
    assert _columns(RulesAdvisor().understand_data(_request(rows, goal="A support bot")))["assistant"] == "reply"
