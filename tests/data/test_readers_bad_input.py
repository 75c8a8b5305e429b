"""Inputs the readers cannot use: each is a ForgeError with a message and a fix, or a BadRow; and memory."""

from __future__ import annotations

import csv
import gc
import json
import tracemalloc
from pathlib import Path

import pytest

from forgellm.data.read.encoding import count_lines_fast, detect_encoding
from forgellm.data.read.readers import open_dataset
from forgellm.data.read.records import BadRow, Record
from forgellm.errors import ForgeError


def fails(path, match: str, **kwargs) -> ForgeError:
    with pytest.raises(ForgeError, match=match) as info:
        dataset = open_dataset(path, **kwargs)
        for _ in dataset.batches():
            pass
    assert info.value.fix, "every ForgeError says what to do"
    return info.value


def test_missing_file(tmp_path):
    fails(tmp_path / "nope.csv", "No such file or folder")


@pytest.mark.parametrize("content", [b"", b"  \n\t\n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    fails(path, "empty|only whitespace")


def test_header_only_csv(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("question,answer\n\n", encoding="utf-8")
    error = fails(path, "header but no rows")
    assert "question, answer" in error.message


@pytest.mark.parametrize(
    ("content", "what"),
    [(b"\x00\x01\x02\x03" * 100, "NUL"), (b"PK\x03\x04" + b"\x00" * 50, "Excel"), (b"PAR1\x00\x00", "Parquet")],
)
def test_binary_renamed_csv(tmp_path, content, what):
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    error = fails(path, "looks like a binary file, not text")
    assert what in error.message


def test_ragged_rows_are_bad_rows(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text('a,b,c\n1,2,3\n4,5\n6,7,8,9\n"x\ny",2,3\n10,11,12\n', encoding="utf-8")
    items = [i for b in open_dataset(path).batches() for i in b]
    bad = [i for i in items if isinstance(i, BadRow)]
    assert [(b.line, b.reason) for b in bad] == [(3, "expected 3 cells, found 2"), (4, "expected 3 cells, found 4")]
    assert bad[0].excerpt == "4,5"
    assert [r.line for r in items if isinstance(r, Record)] == [2, 5, 7]


def test_open_quote_swallowing_lines_is_reported_with_its_span(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('a,b,c\n1,"open,3\n2,x,y\n', encoding="utf-8")
    [item] = [i for b in open_dataset(path).batches() for i in b]
    assert isinstance(item, BadRow) and item.line == 2
    assert item.reason == "expected 3 cells, found 2 (the row spans lines 2-3; a quote may be left open)"


def test_undetectable_encoding(tmp_path):
    path = tmp_path / "odd.csv"
    path.write_bytes(bytes([0x81, 0x8D, 0x8F, 0x90, 0x9D, 0xC0, 0xC1, 0xFF]) * 200)
    error = fails(path, "Could not tell the text encoding")
    assert "UTF-8" in error.message and "cp1252" in error.message and "iconv" in error.fix


def test_unknown_given_encoding(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    fails(path, "Unknown text encoding", encoding="klingon-8")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('"just a string"', "top level is string"),
        ("42", "top level is number"),
        ('["a", "b"]', "array of string values"),
        ("[]", "empty JSON array"),
    ],
)
def test_json_that_is_not_records(tmp_path, content, match):
    path = tmp_path / "d.json"
    path.write_text(content, encoding="utf-8")
    fails(path, match)


def test_broken_json_array_names_the_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n{"a": 1},\n{"a": 2\n{"a": 3}\n]', encoding="utf-8")
    error = fails(path, "not valid JSON at line 4, column 1: Expecting ',' delimiter")
    assert "json.tool" in error.fix


def test_folder_without_text_files(tmp_path):
    (tmp_path / "pic.png").write_bytes(b"\x89PNG")
    (tmp_path / "LICENSE").write_text("MIT", encoding="utf-8")
    error = fails(tmp_path, "no readable text files")
    assert any("pic.png" in d for d in error.details)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage")
    fails(path, "not a valid gzip file")


def test_compressed_parquet_is_refused(tmp_path):
    path = tmp_path / "d.parquet.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage")
    fails(path, "compressed Parquet")


def test_detect_encoding_utf16_without_bom():
    guess = detect_encoding("a,b\n1,2\n".encode("utf-16-le"))
    assert guess.encoding == "utf-16-le"


@pytest.mark.parametrize(
    ("codec", "text", "expected"),
    [
        ("cp1251", "Привет, как дела? Это проверка кодировки.\nЕщё одна строка текста.\n", "cp1251"),
        ("cp1250", "Zażółć gęślą jaźń, to jest próba.\nŁódź i Kraków są w Polsce.\n", "cp1250"),
        ("shift_jis", "日本語のテキストです。" * 50, "cp932"),
        ("latin-1", "Café au lait, très bien. Größe\nÑandú\n", "cp1252"),
    ],
)
def test_detect_legacy_encodings(codec, text, expected):
    guess = detect_encoding(text.encode(codec))
    assert guess.encoding == expected and "charset-normalizer" in guess.how
    assert text.encode(codec).decode(guess.encoding) == text


def test_count_lines_fast(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("a\n1\n2", encoding="utf-8")
    assert count_lines_fast(path) == 3


def test_memory_stays_bounded_on_a_100mb_jsonl(tmp_path):
    path = tmp_path / "big.jsonl"
    line = json.dumps({"instruction": "Say something " * 20, "output": "Something said. " * 40}) + "\n"
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(100 * 1024 * 1024 // len(line) + 1):
            f.write(line)
    assert path.stat().st_size > 100 * 1024 * 1024
    gc.collect()
    tracemalloc.start()
    try:
        count = 0
        for batch in open_dataset(path, batch_rows=2000).batches():
            count += len(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 100 * 1024 * 1024 // len(line) + 1
    assert peak < 40 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB while reading a 100 MB file"


def test_memory_stays_bounded_on_a_large_json_array(tmp_path):
    path = tmp_path / "big.json"
    item = json.dumps({"text": "word " * 200})
    with open(path, "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join([item] * 30000) + "\n]\n")
    tracemalloc.start()
    try:
        count = sum(len(b) for b in open_dataset(path, batch_rows=500).batches())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 30000 and peak < 20 * 1024 * 1024


def write_rows(path: Path, rows) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def test_duplicate_and_blank_header_names(tmp_path):
    path = write_rows(tmp_path / "d.csv", [["a", "a", ""], ["1", "2", "3"]])
    assert open_dataset(path).info.columns == ("a", "a_2", "column_3")
    assert [i for b in open_dataset(path).batches() for i in b][0].fields == {"a": "1", "a_2": "2", "column_3": "3"}
