"""Detection and recipes over the real data sets in ../shared/data (skipped where they are absent).

Records are built here with json/csv, the way a reader yields them, so these tests do not depend on readers.py.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from forgellm.data.prepare.recipe import to_example
from forgellm.data.read.formats import detect_format
from forgellm.data.read.records import Example, RecipeError, Record

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="real data sets (../shared/data) not present")
SAMPLE = 200  # records given to detection, like a profile of the head of a file


def csv_records(name: str) -> list[Record]:
    with open(DATA / name, newline="", encoding="utf-8") as f:
        return [Record(i + 2, row, name) for i, row in enumerate(csv.DictReader(f))]


def json_records(name: str) -> list[Record]:
    return [Record(i + 1, obj, name) for i, obj in enumerate(json.loads((DATA / name).read_text(encoding="utf-8")))]


def jsonl_records(name: str) -> list[Record]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [Record(i + 1, json.loads(line), name) for i, line in enumerate(lines) if line.strip()]


def doc_records(folder: str) -> list[Record]:
    """Markdown documents as readers yield them: {text, path}; licence and read-me files are not data."""
    root = DATA / folder
    paths = [p for p in sorted(root.rglob("*.md")) if not p.name.upper().startswith(("LICENSE", "README"))]
    return [Record(1, {"text": p.read_text(encoding="utf-8"), "path": str(p.relative_to(root))}, p.name) for p in paths]


def apply_all(records: list[Record], fmt: str, recipe) -> tuple[list[Example], Counter]:
    examples, rejects = [], Counter()
    for record in records:
        try:
            examples.append(to_example(record, fmt, recipe))
        except RecipeError as exc:
            rejects[str(exc)] += 1
    return examples, rejects


@pytest.fixture(scope="module")
def bitext():
    return csv_records("bitext_customer_support.csv")


@pytest.fixture(scope="module")
def tickets():
    return csv_records("support_tickets.csv")


@pytest.mark.parametrize("size", [SAMPLE, None])
def test_bitext_is_qa_with_category_label(bitext, size):
    d = detect_format(bitext[:size], kind="csv")
    assert d.format == "qa"
    assert d.recipe.columns["user"] == "instruction"
    assert d.recipe.columns["assistant"] == "response"
    # category (11 coarse values) over intent (27): every class keeps rows in small val/test splits.
    assert d.recipe.columns["label"] == "category"
    assert d.confidence >= 0.8
    examples, rejects = apply_all(bitext, d.format, d.recipe)
    assert (len(examples), sum(rejects.values())) == (4514, 0)
    assert examples[0].label == "ORDER"
    assert [m["role"] for m in examples[0].messages] == ["user", "assistant"]
    assert "\r" not in examples[0].messages[1]["content"]  # strip_whitespace normalises line ends


def test_alpaca_demo():
    records = json_records("alpaca_en_demo.json")
    d = detect_format(records[:SAMPLE], kind="json")
    assert d.format == "alpaca"
    assert d.recipe.columns == {"user": "instruction", "assistant": "output", "input": "input"}
    examples, rejects = apply_all(records, d.format, d.recipe)
    assert (len(examples), sum(rejects.values())) == (999, 0)
    with_input = next(r for r in records if r.fields["input"])
    example = to_example(with_input, d.format, d.recipe)
    assert example.messages[0]["content"].endswith("\n\n" + with_input.fields["input"].strip())


def test_sharegpt_toolcall():
    records = json_records("sharegpt_glaive_toolcall.json")
    d = detect_format(records[:SAMPLE], kind="json")
    assert d.format == "sharegpt"
    assert d.recipe.columns["messages"] == "conversations"
    assert d.recipe.role_map == {
        "human": "user",
        "gpt": "assistant",
        "function_call": "assistant",
        "observation": "user",
    }
    assert any("'tools'" in r for r in d.reasons)
    examples, rejects = apply_all(records, d.format, d.recipe)
    assert (len(examples), sum(rejects.values())) == (300, 0)
    first = examples[0]
    assert first.extra["tools"].startswith("[{")
    call = [m for m in first.messages if m["role"] == "assistant" and m["content"].startswith('{"name"')]
    assert call, "the function_call turn stays as assistant text"
    for ex in examples:
        roles = [m["role"] for m in ex.messages]
        assert all(a != b for a, b in zip(roles, roles[1:], strict=False))
        assert roles[0] == "user" and roles[-1] == "assistant"


def test_openai_toy_rejects_the_row_without_user_turn():
    records = jsonl_records("openai_messages_toy.jsonl")
    d = detect_format(records, kind="jsonl")
    assert d.format == "messages"
    assert d.recipe.columns["messages"] == "messages"
    examples, rejects = apply_all(records, d.format, d.recipe)
    assert len(examples) == 4
    assert list(rejects) == ["no user turn: a conversation needs a user message before the assistant's reply"]
    # The runaway reply is well-formed; length filters (preprocessing.filters.max_chars) deal with it.
    assert max(len(m["content"]) for ex in examples for m in ex.messages) > 20_000
    with pytest.raises(RecipeError, match="no user turn"):
        to_example(records[3], d.format, d.recipe)


@pytest.mark.parametrize("size", [SAMPLE, None])
def test_support_tickets(tickets, size):
    d = detect_format(tickets[:size], kind="csv")
    assert d.format == "qa"
    assert d.recipe.columns["user"] == "Ticket Description"
    assert d.recipe.columns["assistant"] == "Resolution"
    assert d.recipe.columns["label"] == "Ticket Type"
    assert any("Resolution" in w and "empty" in w for w in d.warnings)
    examples, rejects = apply_all(tickets, d.format, d.recipe)
    assert (len(examples), sum(rejects.values())) == (2769, 5700)
    assert list(rejects) == ["column 'Resolution' (assistant) is empty"]
    assert {ex.label for ex in examples} <= {
        "Technical issue",
        "Billing inquiry",
        "Cancellation request",
        "Product inquiry",
        "Refund request",
    }


def test_httpx_docs_are_text():
    records = doc_records("httpx_docs")
    assert len(records) == 23
    d = detect_format(records, kind="markdown")
    assert d.format == "text"
    assert d.recipe.columns == {"text": "text"}
    examples, rejects = apply_all(records, d.format, d.recipe)
    assert (len(examples), sum(rejects.values())) == (23, 0)
    assert all(ex.text and ex.messages is None for ex in examples)


def test_chat_transcripts_are_transcripts():
    records = doc_records("chat_transcripts_ja")
    assert len(records) == 19
    d = detect_format(records, kind="markdown")
    assert d.format == "transcript"
    assert d.recipe.transcript.speakers == {"user": ["## kekyo"], "assistant": ["## chatgpt"]}
    assert d.confidence >= 0.8
    examples, rejects = apply_all(records, d.format, d.recipe)
    assert (len(examples), sum(rejects.values())) == (19, 0)
    # 316 speaker headings; two files have a `## kekyo` turn right after another, merged: 314 turns.
    assert sum(len(ex.messages) for ex in examples) == 314
    # Detection also works when the documents are not flagged as documents by the reader.
    assert detect_format(records).format == "transcript"


@pytest.mark.parametrize(
    ("loader", "expected"),
    [
        (lambda: csv_records("bitext_customer_support.csv")[:50], "qa"),
        (lambda: json_records("alpaca_en_demo.json")[:5], "alpaca"),
        (lambda: json_records("sharegpt_glaive_toolcall.json")[:5], "sharegpt"),
        (lambda: jsonl_records("openai_messages_toy.jsonl")[:2], "messages"),
        (lambda: doc_records("chat_transcripts_ja")[:3], "transcript"),
        (lambda: doc_records("httpx_docs")[:3], "text"),
    ],
)
def test_small_samples_are_enough(loader, expected):
    assert detect_format(loader()).format == expected
