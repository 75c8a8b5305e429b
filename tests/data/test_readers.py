"""Streamed readers over the real shared data sets and generated files of every supported kind."""

from __future__ import annotations

import bz2
import csv
import gzip
import json
from pathlib import Path

import pytest

from forgellm.data.read.readers import DatasetInfo, estimate_rows, open_dataset, sample_records
from forgellm.data.read.records import BadRow, Record

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture
def data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"the shared data sets are not at {DATA} (CI keeps shared/ beside the checkout)")
    return DATA


def read_all(path, **kwargs) -> list[Record | BadRow]:
    return [item for batch in open_dataset(path, **kwargs).batches() for item in batch]


def records(path, **kwargs) -> list[Record]:
    items = read_all(path, **kwargs)
    assert all(isinstance(i, Record) for i in items), [i for i in items if isinstance(i, BadRow)][:3]
    return items


# --- the real data sets -------------------------------------------------------------------------


def test_bitext_csv_rows_and_multiline_start_lines(data):
    rows = records(data / "bitext_customer_support.csv")
    assert len(rows) == 4514
    assert rows[0].line == 2 and rows[0].fields["intent"] == "cancel_order"
    # Checked by hand: the first response spans lines 2-10, so the second record starts on line 11.
    assert rows[1].line == 11
    assert rows[1].fields["instruction"] == "can you help me canceling purchase 00004587345?"
    lines = (data / "bitext_customer_support.csv").read_text(encoding="utf-8").splitlines()
    for row in (rows[1], rows[1000], rows[-1]):
        assert lines[row.line - 1].startswith(f"{row.fields['context']},{row.fields['role']},")
    assert [r.line for r in rows] == sorted({r.line for r in rows})
    assert rows[0].source == "bitext_customer_support.csv"


def test_bitext_info(data):
    info = open_dataset(data / "bitext_customer_support.csv").info
    assert (info.kind, info.delimiter, info.quotechar, info.encoding) == ("csv", ",", '"', "utf-8")
    assert info.columns[:3] == ("context", "role", "instruction") and len(info.columns) == 11
    assert info.compressed is False and info.size_bytes == (data / "bitext_customer_support.csv").stat().st_size


def test_support_tickets_csv(data):
    rows = records(data / "support_tickets.csv")
    assert len(rows) == 8469
    assert rows[0].fields["Ticket Type"] == "Technical issue"
    assert [r.fields["Ticket ID"] for r in rows[:3]] == ["1", "2", "3"]
    assert (rows[0].line, rows[1].line, rows[2].line) == (2, 9, 16)  # multi-line descriptions


def test_alpaca_json_array_with_start_lines(data):
    rows = records(data / "alpaca_en_demo.json")
    assert len(rows) == 999
    assert set(rows[0].fields) == {"instruction", "input", "output"}
    lines = (data / "alpaca_en_demo.json").read_text(encoding="utf-8").splitlines()
    assert rows[0].line == 2
    for row in rows[:5] + rows[-3:]:
        assert lines[row.line - 1].strip() == "{"
        assert json.dumps(row.fields["instruction"], ensure_ascii=False) in lines[row.line]


def test_sharegpt_json(data):
    rows = records(data / "sharegpt_glaive_toolcall.json")
    assert len(rows) == 300
    assert rows[0].fields["conversations"][0]["from"] == "human"
    assert rows[1].line == 39  # checked by hand


def test_openai_jsonl_reads_all_five_lines(data):
    # Its deliberate errors are about the chat format (no user turn...), not JSON: all five are records.
    rows = records(data / "openai_messages_toy.jsonl")
    assert [r.line for r in rows] == [1, 2, 3, 4, 5]
    assert all("messages" in r.fields for r in rows)


def test_httpx_docs_folder(data):
    dataset = open_dataset(data / "httpx_docs")
    rows = records(data / "httpx_docs")
    assert len(rows) == 23
    assert dataset.info.skipped == (("LICENSE.httpx.md", "licence or notice file, not content"),)
    assert dataset.info.files == tuple(r.fields["path"] for r in rows) == tuple(sorted(dataset.info.files))
    assert "advanced/clients.md" in dataset.info.files
    assert all(r.line == 1 and r.source == r.fields["path"] and r.fields["text"].strip() for r in rows)
    api = next(r for r in rows if r.fields["path"] == "api.md")
    assert api.fields["text"] == (data / "httpx_docs" / "api.md").read_text(encoding="utf-8")


def test_chat_transcripts_folder(data):
    dataset = open_dataset(data / "chat_transcripts_ja")
    rows = records(data / "chat_transcripts_ja")
    assert len(rows) == 19
    assert dict(dataset.info.skipped) == {
        "LICENSE": "licence or notice file, not content",
        "README.md": "read-me file, not content",
    }
    assert any("## kekyo" in r.fields["text"] for r in rows)
    assert dataset.info.num_rows == 19 and dataset.info.kind == "text"


def test_sample_records_and_estimate(data):
    dataset = open_dataset(data / "bitext_customer_support.csv", batch_rows=100)
    sample = sample_records(dataset, n=250)
    assert len(sample) == 250 and sample[0].line == 2
    assert 0.8 * 4514 < estimate_rows(dataset, sample=500) < 1.2 * 4514


# --- generated inputs ---------------------------------------------------------------------------

TEXT_ROWS = [["id", "name", "price"], ["1", "Café crème", "3 €"], ["2", "Résumé naïve", "€ 5"], ["3", "Élan", "10"]]


def write_csv(path: Path, rows, encoding="utf-8", delimiter=",") -> Path:
    with open(path, "w", encoding=encoding, newline="") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)
    return path


@pytest.mark.parametrize(
    ("encoding", "reported"), [("utf-16", "utf-16"), ("utf-8-sig", "utf-8-sig"), ("cp1252", "cp1252")]
)
def test_encodings_round_trip(tmp_path, encoding, reported):
    path = write_csv(tmp_path / "prices.csv", TEXT_ROWS, encoding=encoding)
    dataset = open_dataset(path)
    assert dataset.info.encoding == reported
    assert dataset.info.columns == ("id", "name", "price")  # no BOM glued to the first name
    rows = records(path)
    assert [list(r.fields.values()) for r in rows] == TEXT_ROWS[1:]
    assert [r.line for r in rows] == [2, 3, 4]
    assert dataset.replaced_chars == 0


def test_cp1252_accents_only_far_into_a_large_file(tmp_path):
    rows = [["id", "text"]] + [[str(i), "plain ascii text " * 4] for i in range(30000)] + [["x", "Café €"]]
    path = write_csv(tmp_path / "late.csv", rows, encoding="cp1252")
    dataset = open_dataset(path)
    assert dataset.info.encoding == "cp1252"
    assert records(path)[-1].fields["text"] == "Café €"


def test_given_encoding(tmp_path):
    path = write_csv(tmp_path / "prices.csv", TEXT_ROWS, encoding="cp1252")
    dataset = open_dataset(path, encoding="cp1252")
    assert (dataset.info.encoding, dataset.info.encoding_how) == ("cp1252", "given")
    wrong = open_dataset(path, encoding="utf-8")
    assert "replaced" in wrong.info.encoding_how
    rows = [item for batch in wrong.batches() for item in batch]
    assert "\ufffd" in rows[0].fields["name"] and wrong.replaced_chars > 0


@pytest.mark.parametrize("opener", [gzip.open, bz2.open])
def test_compressed_csv_and_jsonl(tmp_path, opener):
    suffix = ".gz" if opener is gzip.open else ".bz2"
    csv_path = tmp_path / f"data.csv{suffix}"
    with opener(csv_path, "wt", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["q", "a"], ["hi", "hello\nthere"], ["bye", "ciao"]])
    dataset = open_dataset(csv_path)
    assert (dataset.info.kind, dataset.info.compressed) == ("csv", True)
    assert [(r.line, r.fields["a"]) for r in records(csv_path)] == [(2, "hello\nthere"), (4, "ciao")]

    jsonl_path = tmp_path / f"data.jsonl{suffix}"
    with opener(jsonl_path, "wt", encoding="utf-8") as f:
        f.write('{"a": 1}\n\n{"a": 2}\n')
    assert open_dataset(jsonl_path).info.kind == "jsonl"
    assert [(r.line, r.fields) for r in records(jsonl_path)] == [(1, {"a": 1}), (3, {"a": 2})]


def test_gzip_found_by_content_without_gz_suffix(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(gzip.compress(b'{"a": 1}\n'))
    dataset = open_dataset(path)
    assert dataset.info.compression == "gzip" and records(path)[0].fields == {"a": 1}


def test_parquet(tmp_path):
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {"q": [f"q{i}" for i in range(2500)], "n": list(range(2500)), "when": [datetime.date(2024, 1, 1)] * 2500}
    )
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=700)
    dataset = open_dataset(tmp_path / "t.parquet", batch_rows=1000)
    assert (dataset.info.kind, dataset.info.num_rows, dataset.info.columns) == ("parquet", 2500, ("q", "n", "when"))
    batches = list(dataset.batches())
    assert [len(b) for b in batches] == [1000, 1000, 500]
    assert batches[1][0] == Record(1001, {"q": "q1000", "n": 1000, "when": "2024-01-01"}, "t.parquet")


def test_tsv_and_sniffed_semicolon(tmp_path):
    tsv = write_csv(tmp_path / "d.tsv", [["a", "b"], ["1, 2", "x;y"]], delimiter="\t")
    assert open_dataset(tsv).info.delimiter == "\t"
    assert records(tsv)[0].fields == {"a": "1, 2", "b": "x;y"}
    semi = write_csv(
        tmp_path / "d.csv", [["name", "city", "note"], ["Ann", "Köln", "a, b"], ["Bo", "Rome", "c"]], delimiter=";"
    )
    dataset = open_dataset(semi)
    assert (dataset.info.kind, dataset.info.delimiter) == ("csv", ";")
    assert records(semi)[0].fields == {"name": "Ann", "city": "Köln", "note": "a, b"}


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        ('[{"a": 1}]', "json"),
        ('{"a": 1}\n{"a": 2}\n', "jsonl"),
        ("a,b\n1,2\n3,4\n", "csv"),
        ("a\tb\n1\t2\n3\t4\n", "tsv"),
        ("Just some prose.\nMore of it here.\n", "text"),
    ],
)
def test_kind_sniffed_without_suffix(tmp_path, content, kind):
    path = tmp_path / "export"
    path.write_text(content, encoding="utf-8")
    info = open_dataset(path).info
    assert (info.kind, info.kind_how) == (kind, "content")
    assert read_all(path)


def test_jsonl_saved_as_json_and_keyed_object(tmp_path):
    lines = tmp_path / "lines.json"
    lines.write_text('{"a": 1}\n{"a": 2}\n', encoding="utf-8")
    assert open_dataset(lines).info.kind == "jsonl" and len(records(lines)) == 2
    keyed = tmp_path / "keyed.json"
    keyed.write_text('{"version": "1",\n "data": [\n  {"a": 1},\n  {"a": 2}\n ]}\n', encoding="utf-8")
    dataset = open_dataset(keyed)
    assert dataset.info.json_key == "data"
    assert [(r.line, r.fields) for r in records(keyed)] == [(3, {"a": 1}), (4, {"a": 2})]


def test_jsonl_bad_lines_become_bad_rows(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n{"a": \n[1, 2]\n"text"\n\n{"a": 3}\n', encoding="utf-8")
    items = read_all(path)
    assert [type(i).__name__ for i in items] == ["Record", "BadRow", "BadRow", "BadRow", "Record"]
    assert items[1].line == 2 and items[1].reason.startswith("invalid JSON:") and items[1].excerpt == '{"a": \n'
    assert items[2].reason == "valid JSON but an array, not an object" and items[2].line == 3
    assert items[4].line == 6


def test_json_array_items_that_are_not_objects(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n{"a": 1},\n"stray",\n{"a": 2}\n]', encoding="utf-8")
    items = read_all(path)
    assert isinstance(items[1], BadRow) and items[1].line == 3 and "a string" in items[1].reason
    assert items[2].line == 4


def test_single_text_file(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("# Title\r\nBody\r\n", encoding="utf-8")
    assert records(path) == [Record(1, {"text": "# Title\nBody\n", "path": "notes.md"}, "notes.md")]


def test_folder_skips_and_lists_non_text(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.md").write_text("second", encoding="utf-8")
    (tmp_path / "sub" / "a.txt").write_text("nested", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first", encoding="utf-16")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n")
    (tmp_path / "blank.txt").write_text("  \n", encoding="utf-8")
    (tmp_path / "fake.md").write_bytes(b"\x00\x01\x02binary")
    dataset = open_dataset(tmp_path)
    assert dataset.info.files == ("a.txt", "b.md", "blank.txt", "fake.md", "sub/a.txt")
    assert dataset.info.skipped == (("image.png", "not a text document (.txt/.md/.markdown/.rst)"),)
    items = read_all(tmp_path)
    assert [i.fields["text"] for i in items if isinstance(i, Record)] == ["first", "second", "nested"]
    assert [(i.source, i.reason.split(" (")[0]) for i in items if isinstance(i, BadRow)] == [
        ("blank.txt", "empty document"),
        ("fake.md", "looks like a binary file, not text: it is binary data"),
    ]
    assert json.loads(json.dumps(dataset.info.to_dict()))["skipped"] == [
        {"path": "image.png", "reason": "not a text document (.txt/.md/.markdown/.rst)"}
    ]


def test_info_to_dict_has_stable_keys(tmp_path):
    expected = {
        "path",
        "kind",
        "kind_how",
        "compressed",
        "compression",
        "encoding",
        "encoding_confidence",
        "encoding_how",
        "encoding_per_line",
        "delimiter",
        "quotechar",
        "columns",
        "dropped_columns",
        "header",
        "json_key",
        "files",
        "skipped",
        "size_bytes",
        "num_rows",
    }
    csv_path = write_csv(tmp_path / "a.csv", TEXT_ROWS)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.md").write_text("x", encoding="utf-8")
    for path in (csv_path, tmp_path / "docs"):
        info = open_dataset(path).info
        assert isinstance(info, DatasetInfo) and set(info.to_dict()) == expected
        json.dumps(info.to_dict())
    with pytest.raises(AttributeError):
        info.kind = "csv"  # frozen


def test_batches_bounded_repeatable_and_resumable(tmp_path):
    rows = [["id", "text"]] + [[str(i), f"line {i}\nsecond"] for i in range(1234)]
    path = write_csv(tmp_path / "d.csv", rows)
    dataset = open_dataset(path, batch_rows=100)
    first = list(dataset.batches())
    assert [len(b) for b in first] == [100] * 12 + [34]
    assert first == list(dataset.batches())
    assert list(dataset.batches(start_batch=10)) == first[10:]
    assert [r.line for r in first[0][:3]] == [2, 4, 6]


def test_ten_megabyte_cell(tmp_path):
    big = "x" * (10 * 1024 * 1024)
    path = write_csv(tmp_path / "big.csv", [["id", "text"], ["1", big], ["2", "small"]])
    rows = records(path)
    assert len(rows[0].fields["text"]) == len(big) and rows[1] == Record(3, {"id": "2", "text": "small"}, "big.csv")
    jpath = tmp_path / "big.json"
    jpath.write_text(json.dumps([{"text": big}, {"text": "small"}], indent=1), encoding="utf-8")
    items = records(jpath)
    assert len(items[0].fields["text"]) == len(big) and items[1].line == 5
