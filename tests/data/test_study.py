"""The data study on the real shared data sets and on generated files with known problems."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from forgellm.data.read.records import BadRow, Example, RecipeError, Record
from forgellm.data.study.profile import study_dataset
from forgellm.data.study.report import StudyReport

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def csv_records(path: Path):
    """Records with the line where each row starts (multi-line cells included), like the readers give."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        _ = reader.fieldnames  # reads the header line
        start = reader.line_num + 1
        for row in reader:
            yield Record(start, dict(row), path.name)
            start = reader.line_num + 1


def shared_file(name: str) -> Path:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"shared data set {name} is not at {path}")
    return path


@pytest.fixture(scope="module")
def tickets() -> tuple[StudyReport, list[dict[str, str]]]:
    path = shared_file("support_tickets.csv")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return study_dataset(csv_records(path)), rows


@pytest.fixture(scope="module")
def bitext() -> StudyReport:
    return study_dataset(csv_records(shared_file("bitext_customer_support.csv")))


def findings(report: StudyReport, code: str):
    return [f for f in report.findings if f.code == code]


def test_support_tickets_placeholders_are_a_warning_with_the_right_count(tickets):
    report, rows = tickets
    expected = sum(any("{product_purchased}" in v for v in row.values()) for row in rows)
    (finding,) = findings(report, "placeholders_single")
    assert finding.severity == "warning"
    assert report.placeholders["single"]["names"]["{product_purchased}"] == expected
    assert f"{expected} rows contain {{product_purchased}}" in finding.fix
    assert finding.examples[0] == 2  # the first data row starts on line 2


def test_support_tickets_missing_resolutions_duplicates_pii_labels(tickets):
    report, rows = tickets
    assert report.rows == len(rows) == 8469
    empty = sum(not row["Resolution"].strip() for row in rows)
    resolution = next(c for c in report.columns if c["name"] == "Resolution")
    assert resolution["missing"]["total"] == empty > 4000
    assert any("Resolution" in f.title for f in findings(report, "missing_values"))

    assert report.main_text_column == "Ticket Description"
    descriptions = [row["Ticket Description"].strip() for row in rows]
    assert report.duplicates["texts"]["rows"] == len(descriptions) - len(set(descriptions)) > 0
    assert findings(report, "duplicate_texts")

    (pii,) = findings(report, "pii")
    assert report.pii["email"]["rows"] == 8469
    assert all("***@" in sample for sample in report.pii["email"]["samples"])
    assert rows[0]["Customer Email"] not in json.dumps(report.to_dict())  # never the full value

    assert report.label_column == "Ticket Type"
    counts = report.labels["Ticket Type"]["counts"]
    assert sum(counts.values()) == 8469 and set(counts) >= {"Refund request", "Technical issue"}
    assert {c["name"]: c["type"] for c in report.columns}["Customer Age"] == "number"
    assert {c["name"]: c["type"] for c in report.columns}["Date of Purchase"] == "date"


def test_bitext_double_brace_placeholders_are_info_and_no_encoding_problems(bitext):
    (finding,) = findings(bitext, "placeholders_double")
    assert finding.severity == "info" and finding.count > 1000
    assert not findings(bitext, "placeholders_single")
    assert bitext.label_column == "category"
    assert bitext.labels["category"]["counts"]["ACCOUNT"] > 0
    assert all(v["rows"] == 0 for v in bitext.encoding.values())
    assert not {f.code for f in bitext.findings} & {"mojibake", "control_chars", "replacement_chars"}
    assert bitext.languages[0]["language"] == "en"
    assert bitext.token_counter == "estimate:words"
    assert {f.code for f in bitext.findings} >= {"constant_column", "max_length"}


def test_encoding_problems_are_found_with_their_lines():
    texts = ["Caf\u00c3\u00a9 au lait is nice", "fine text here", "bell\x07 in the middle", "lost \ufffd char", "ok"]
    records = [Record(10 + i, {"text": t, "answer": "an answer"}) for i, t in enumerate(texts)]
    report = study_dataset(records)
    assert report.encoding["mojibake"] == {"rows": 1, "lines": [10]}
    assert report.encoding["control_chars"] == {"rows": 1, "lines": [12]}
    assert report.encoding["replacement_chars"] == {"rows": 1, "lines": [13]}
    codes = {f.code: f for f in report.findings}
    assert codes["mojibake"].severity == "warning" and codes["mojibake"].examples == [10]


def _sentence(rng: random.Random, words: list[str], n: int = 60) -> str:
    return " ".join(rng.choice(words) for _ in range(n))


def test_near_duplicates_with_small_edits_are_found():
    rng = random.Random(7)
    words = [f"w{i}x" for i in range(400)]
    texts = [_sentence(rng, words) for _ in range(150)]
    records = [Record(i + 1, {"prompt": t, "answer": "yes"}) for i, t in enumerate(texts)]
    edited = []
    for j in range(20):
        source = texts[j].split()
        source[30] = "changed"  # one word of sixty
        edited.append(Record(1000 + j, {"prompt": " ".join(source), "answer": "yes"}))
    report = study_dataset(records + edited)
    near = report.duplicates["near"]
    assert 16 <= near["rows"] <= 20
    assert near["pairs"][0][:2] == [1, 1000] and near["pairs"][0][2] >= 0.8
    assert report.duplicates["texts"]["rows"] == 0
    assert findings(report, "near_duplicates")


def test_exact_duplicates_empty_short_and_unreadable_rows():
    records = [
        Record(1, {"q": "What is the capital of France?", "a": "Paris is the capital."}),
        Record(2, {"q": "What is the capital of France?", "a": "Paris is the capital."}),
        Record(3, {"q": "", "a": None}),
        Record(4, {"q": "   ", "a": "  "}),
        BadRow(5, "unclosed quote"),
        Record(6, {"q": "hi", "a": "ok"}),
    ]
    report = study_dataset([records[:3], records[3:]])  # batches, as open_dataset(...).batches() gives
    assert report.rows == 5 and report.unreadable["rows"] == 1
    assert report.duplicates["records"]["pairs"] == [[1, 2]]
    assert report.records["empty"]["lines"] == [3, 4]
    codes = {f.code: f for f in report.findings}
    assert codes["unreadable_rows"].severity == "warning"  # 1 of 6 read: below preprocessing.max_error_rate
    assert codes["exact_duplicates"].examples == [2]


def test_token_fallback_is_labelled_and_max_length_suggested():
    records = [Record(i + 1, {"text": "x" * 400}) for i in range(10)]
    report = study_dataset(records)
    assert report.token_counter == "estimate:words"
    assert report.lengths["tokens"]["p50"] == 100
    # 100 tokens: the one max_length rule (models/lengths.py) gives its floor, 256, as `forge plan` would.
    assert report.suggested_max_length == {"value": 256, "covers": 1.0}
    assert report.truncation is None


def _word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{f"w{i}": i + 1 for i in range(20)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    tokenizer.name_or_path = "tiny-words"
    return tokenizer


def test_model_tokenizer_counts_and_truncation_shares():
    # 2, 4, 6 and 10 words = tokens; max_length 5 cuts 2 examples and 1 + 5 = 6 of 22 tokens.
    lengths = [2, 4, 6, 10]
    records = [Record(i + 1, {"text": " ".join(f"w{j}" for j in range(n))}) for i, n in enumerate(lengths)]
    report = study_dataset(records, tokenizer=_word_tokenizer(), max_length=5)
    assert report.token_counter == "model:tiny-words"
    assert report.lengths["tokens"]["max"] == 10 and report.lengths["tokens"]["min"] == 2
    trunc = report.truncation
    assert trunc["examples_over"] == 2 and trunc["examples_share"] == 0.5
    assert trunc["tokens_over"] == 6 and trunc["tokens_share"] == round(6 / 22, 4)
    assert trunc["lines"] == [3, 4]
    (finding,) = findings(report, "truncation")
    assert finding.severity == "warning" and "model.max_length" in finding.fix


def test_examples_from_a_recipe_are_profiled_with_rejects():
    def to_example(record: Record) -> Example:
        if not record.fields["a"]:
            raise RecipeError("assistant column 'a' is empty")
        messages = [
            {"role": "user", "content": record.fields["q"]},
            {"role": "assistant", "content": record.fields["a"]},
        ]
        return Example(record.line, messages=messages, label=record.fields["kind"])

    records = [Record(i + 1, {"q": f"question {i}", "a": f"answer number {i}", "kind": "k"}) for i in range(8)]
    records += [Record(20, {"q": "q", "a": "", "kind": "k"}), Record(21, {"q": "p", "a": "", "kind": "k"})]
    report = study_dataset(records, to_example=to_example)
    assert report.examples["made"] == 8
    assert report.examples["rejected"]["rows"] == 2 and report.examples["rejected"]["lines"] == [20, 21]
    assert report.examples["turns"] == {"2": 8}
    assert report.examples["assistant_chars"]["min"] == len("answer number 0")
    (finding,) = findings(report, "recipe_rejects")
    assert finding.severity == "warning" and "assistant column 'a' is empty" in finding.detail


def test_detection_and_recipe_of_the_real_toy_messages_file():
    formats = pytest.importorskip("forgellm.data.read.formats")
    readers = pytest.importorskip("forgellm.data.read.readers")
    dataset = readers.open_dataset(shared_file("openai_messages_toy.jsonl"))
    detection = formats.detect_format(readers.sample_records(dataset))
    seen: list[int] = []
    report = study_dataset(dataset.batches(), detection=detection, progress=seen.append)
    assert report.examples is not None and report.examples["made"] + report.examples["rejected"]["rows"] == report.rows
    assert report.examples["rejected"]["rows"] >= 1  # the row with no user turn
    assert seen[-1] == report.rows + report.unreadable["rows"]


def test_report_round_trips_through_json(bitext):
    data = json.loads(json.dumps(bitext.to_dict()))
    assert data == bitext.to_dict()
    again = StudyReport.from_dict(data)
    assert again.to_dict() == data
    assert list(data) == list(bitext.to_dict())
    for key in (
        "rows",
        "columns",
        "duplicates",
        "encoding",
        "placeholders",
        "pii",
        "lengths",
        "token_counter",
        "truncation",
        "languages",
        "labels",
        "findings",
    ):
        assert key in data
