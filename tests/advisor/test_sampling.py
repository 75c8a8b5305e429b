"""What leaves the machine: rows spread over the sample, cut, PII-masked; statistics of every record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forgellm.advisor.sampling import MAX_VALUE_CHARS, build_data_request, describe_sent, spread_indices
from forgellm.data.read.records import Record

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _records(n: int) -> list[Record]:
    rows = []
    for i in range(n):
        fields = {"question": f"How do I reset my password? (ticket {i})", "answer": f"Go to settings, step {i}."}
        fields["category"] = ["account", "billing", "shipping"][i % 3]
        rows.append(Record(line=i + 2, fields=fields, source="tickets.csv"))
    return rows


def _build(records: list[Record], **overrides):
    options = dict(file_name="tickets.csv", kind="csv", goal="a support bot", hint=None, sample_rows=5, redact_pii=True)
    options.update(overrides)
    return build_data_request(records, **options)


def test_rows_are_spread_from_first_to_last_and_the_same_on_every_run():
    assert spread_indices(2000, 5) == [0, 500, 1000, 1499, 1999]
    assert spread_indices(3, 5) == [0, 1, 2]
    assert spread_indices(10, 1) == [0]
    assert spread_indices(10, 0) == []
    first = _build(_records(2000))
    again = _build(_records(2000))
    assert first.rows == again.rows
    assert [r["question"] for r in first.rows][-1].endswith("(ticket 1999)")


def test_long_values_are_cut_and_say_so():
    records = _records(4)
    long_answer = "word " * 400  # 2,000 characters
    records[0] = Record(line=2, fields={**records[0].fields, "answer": long_answer})
    request = _build(records)
    sent = request.rows[0]["answer"]
    assert sent.startswith(long_answer[:MAX_VALUE_CHARS])
    assert len(sent) < len(long_answer)
    assert "2,000 characters in all" in sent
    assert request.rows[1]["answer"] == records[1].fields["answer"]  # short values are untouched


def test_pii_is_masked_in_rows_and_in_statistics_only_when_asked():
    records = _records(6)
    records[0] = Record(line=2, fields={**records[0].fields, "category": "jane.doe@example.com"})
    records[3] = Record(line=5, fields={**records[3].fields, "question": "Call me at jane.doe@example.com please"})
    masked = _build(records, sample_rows=6)
    text = json.dumps(masked.to_dict())
    assert "jane.doe@example.com" not in text
    assert "[EMAIL]" in masked.rows[3]["question"]
    assert masked.pii_masked is True
    plain = _build(records, sample_rows=6, redact_pii=False)
    assert plain.rows[3]["question"] == records[3].fields["question"]
    assert "jane.doe@example.com" in json.dumps(plain.columns)


def test_nested_conversations_are_masked_and_shortened_item_by_item():
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} mail bob@example.org"} for i in range(30)
    ]
    request = _build([Record(line=1, fields={"messages": turns})], sample_rows=1)
    sent = request.rows[0]["messages"]
    assert len(sent) == 20
    assert all("bob@example.org" not in t["content"] and "[EMAIL]" in t["content"] for t in sent)


def test_statistics_cover_every_record_not_only_the_sampled_rows():
    records = _records(100)
    records[37] = Record(line=39, fields={**records[37].fields, "answer": None})  # never among the 5 sampled
    request = _build(records)
    assert 37 not in spread_indices(100, 5)
    stats = {c["name"]: c for c in request.columns}
    assert list(stats) == ["question", "answer", "category"]
    assert stats["answer"]["missing"] == 1
    assert stats["category"]["distinct"] == 3
    assert set(stats["category"]["common_values"]) == {"account", "billing", "shipping"}
    assert stats["question"]["types"] == {"str": 100}
    assert request.total_rows == 100


def test_describe_sent_says_exactly_what_leaves_the_machine():
    request = _build(_records(2000))
    line = describe_sent(request, "gemini", "gemini-2.5-flash")
    assert line == (
        "Sent to gemini-2.5-flash (gemini): the goal, 5 of 2,000 sampled rows "
        f"(PII masked, values cut to {MAX_VALUE_CHARS} chars), statistics of 3 columns."
    )
    stats_only = _build(_records(10), sample_rows=0, goal=None, redact_pii=False, hint={"format": "qa"})
    line = describe_sent(stats_only, "openai", "gpt-4o-mini")
    assert "the goal" not in line and "no data rows" in line and "offline format detection" in line


def test_real_support_tickets_keep_customer_emails_home():
    path = SHARED_DATA / "support_tickets.csv"
    if not path.is_file():
        pytest.skip(f"shared data set missing: {path}")
    from forgellm.data.read.readers import open_dataset, sample_records

    records = sample_records(open_dataset(path), 300)
    emails = {r.fields["Customer Email"] for r in records}
    request = _build(records)
    text = json.dumps(request.to_dict(), ensure_ascii=False)
    assert len(request.rows) == 5 and request.total_rows == 300
    assert not any(e in text for e in emails)
    assert len(request.columns) == len(records[0].fields)
