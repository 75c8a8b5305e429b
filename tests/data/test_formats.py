"""detect_format on small synthetic samples: every format, name and content heuristics, labels, ambiguity."""

from __future__ import annotations

import json

from forgellm.data.read.detection import Detection
from forgellm.data.read.formats import detect_format
from forgellm.data.read.records import Record


def rows(*dicts: dict) -> list[Record]:
    return [Record(i + 1, d, "x") for i, d in enumerate(dicts)]


def many(n: int, make) -> list[Record]:
    return rows(*(make(i) for i in range(n)))


def test_messages_with_tool_role():
    sample = rows(
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
                {"role": "tool", "content": "{}"},
                {"role": "assistant", "content": "b"},
            ]
        }
    )
    d = detect_format(sample)
    assert d.format == "messages"
    assert d.recipe.role_map == {"tool": "user"}  # identity roles are not spelled out
    assert d.confidence >= 0.9


def test_messages_as_json_strings_in_a_csv_column():
    chat = json.dumps([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    d = detect_format(rows({"id": "1", "dialog": chat}, {"id": "2", "dialog": chat}), kind="csv")
    assert (d.format, d.recipe.columns["messages"]) == ("messages", "dialog")


def test_sharegpt_role_map_and_unknown_speaker():
    conv = [
        {"from": "human", "value": "q"},
        {"from": "chatgpt", "value": "a"},
        {"from": "system", "value": "s"},
        {"from": "narrator", "value": "n"},
    ]
    d = detect_format(rows({"conversations": conv, "system": "Be nice."}))
    assert d.format == "sharegpt"
    assert d.recipe.role_map == {"human": "user", "chatgpt": "assistant", "system": "system"}
    assert d.recipe.columns == {"messages": "conversations", "system": "system"}
    assert any("narrator" in w and "data.recipe.role_map" in w for w in d.warnings)
    assert d.confidence < 0.9


def test_alpaca_with_history_and_system():
    d = detect_format(rows({"instruction": "i", "input": "", "output": "o", "history": [], "system": "s"}))
    assert d.format == "alpaca"
    assert d.recipe.columns == {
        "user": "instruction",
        "assistant": "output",
        "input": "input",
        "history": "history",
        "system": "system",
    }


def test_prompt_completion():
    d = detect_format(rows({"prompt": "p", "completion": "c"}))
    assert (d.format, d.recipe.columns) == ("prompt_completion", {"user": "prompt", "assistant": "completion"})


def _qa(user: str, assistant: str, n: int = 30) -> list[Record]:
    return many(
        n,
        lambda i: {
            user: f"How do I reset my password number {i}?",
            assistant: f"Open settings, choose security, then reset. Step {i} explained in detail.",
        },
    )


def test_qa_pairs_by_name():
    for user, assistant in [
        ("question", "answer"),
        ("query", "response"),
        ("instruction", "response"),
        ("input", "output"),
        ("customer", "agent"),
        ("Ticket Description", "Resolution"),
        ("user_message", "bot_reply"),
    ]:
        d = detect_format(_qa(user, assistant), kind="csv")
        assert (d.format, d.recipe.columns["user"], d.recipe.columns["assistant"]) == ("qa", user, assistant)


def test_qa_by_content_when_names_say_nothing():
    sample = many(
        40,
        lambda i: {
            "col_a": f"Why does my router number {i} keep dropping the connection?",
            "col_b": "Routers drop connections when the firmware is old or the channel is "
            f"crowded; update the firmware and pick another channel ({i}).",
            "id": str(i),
        },
    )
    d = detect_format(sample, kind="csv")
    assert (d.format, d.recipe.columns["user"], d.recipe.columns["assistant"]) == ("qa", "col_a", "col_b")
    assert 0.3 <= d.confidence < 0.8
    assert any("data.recipe.columns.user" in w for w in d.warnings)


def test_label_column_suggestion_prefers_named_low_cardinality_columns():
    sample = many(
        40,
        lambda i: {
            "question": f"question {i} about my order?",
            "answer": f"answer {i} " * 5,
            "intent": f"intent_{i % 7}",
            "category": ["ORDER", "REFUND"][i % 2],
            "gender": ["f", "m"][i % 2],
            "ticket_id": str(i),
        },
    )
    d = detect_format(sample)
    assert d.recipe.columns["label"] == "category"
    assert any("'intent'" in r for r in d.reasons)  # the alternative is named
    assert "gender" not in d.recipe.columns.values()


def test_label_from_a_sorted_file_and_last_word_names():
    sorted_sample = many(
        30, lambda i: {"question": f"question number {i}?", "answer": f"a long answer {i}", "category": "ORDER"}
    )
    assert detect_format(sorted_sample).recipe.columns["label"] == "category"
    tickets = many(
        30,
        lambda i: {
            "question": f"question number {i}?",
            "answer": f"a long answer {i}",
            "Ticket Type": ["Billing", "Refund", "Technical"][i % 3],
        },
    )
    assert detect_format(tickets).recipe.columns["label"] == "Ticket Type"


def test_date_column():
    sample = many(
        30,
        lambda i: {
            "question": f"question number {i}?",
            "answer": f"long answer {i}",
            "created_at": f"2024-01-{i % 28 + 1:02d}",
        },
    )
    assert detect_format(sample).recipe.columns["date"] == "created_at"


def test_single_text_column_is_text():
    d = detect_format(many(10, lambda i: {"content": f"A paragraph of prose number {i}. " * 20, "id": i}))
    assert (d.format, d.recipe.columns) == ("text", {"text": "content"})
    long = many(10, lambda i: {"body_md": f"Long article {i}. " * 30, "n": str(i)})
    assert detect_format(long).format == "text"


def test_documents_are_text_and_transcripts_are_found():
    docs = rows({"text": "# Guide\n\nSome prose.\n\n## Install\n\npip install x", "path": "a.md"})
    assert detect_format(docs, kind="markdown").format == "text"
    chat = "\n".join(f"**Alice**: question {i}\n\n**Bot**: answer {i}" for i in range(4))
    d = detect_format(rows({"text": chat, "path": "c.md"}), kind="markdown")
    assert d.format == "transcript"
    assert d.recipe.transcript.speakers == {"user": ["**Alice**:"], "assistant": ["**Bot**:"]}


def test_transcript_assistant_by_order_when_names_say_nothing():
    chat = "\n".join(f"## tanaka\nq{i}\n## suzuki\na{i}" for i in range(5))
    d = detect_format(rows({"text": chat, "path": "a.md"}, {"text": chat, "path": "b.md"}), kind="md")
    assert d.recipe.transcript.speakers == {"user": ["## tanaka"], "assistant": ["## suzuki"]}
    assert d.confidence < 0.8 and d.warnings  # a guess by order: the user is told to check it


def test_transcript_assistant_by_name_even_when_it_speaks_first():
    chat = "\n".join(f"Claude: hello {i}\nMaria: thanks {i}" for i in range(5))
    d = detect_format(rows({"text": chat, "path": "a.txt"}), kind="text")
    assert d.recipe.transcript.speakers["assistant"] == ["Claude:"]


def test_headings_that_do_not_alternate_are_not_speakers():
    doc = "## Setup\ntext\n## Setup\nmore\n## Usage\nx\n## Usage\ny\n## Setup\nz"
    assert detect_format(rows({"text": doc, "path": "a.md"}), kind="markdown").format == "text"


def test_ambiguous_and_empty_samples_say_what_to_set():
    d = detect_format(rows({"a": 1, "b": 2}, {"a": 3, "b": 4}))
    assert d.confidence <= 0.2
    assert any("data.format" in w for w in d.warnings)
    empty = detect_format([])
    assert empty.confidence == 0.0 and empty.warnings


def test_to_dict_is_json_ready():
    d = detect_format(rows({"prompt": "p", "completion": "c"}))
    assert isinstance(d, Detection)
    data = json.loads(json.dumps(d.to_dict()))
    assert data["format"] == "prompt_completion"
    assert data["recipe"]["columns"] == {"user": "prompt", "assistant": "completion"}
    assert set(data) == {"format", "recipe", "confidence", "reasons", "warnings", "fits"}
