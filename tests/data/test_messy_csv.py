"""Messy CSVs as real exports make them (issue 16): trailing-comma spill columns, legacy encodings (cp1252,
latin-1, Shift_JIS / CP932), CRLF and CR line ends, thousands of blank rows, literal "\\n" escapes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from stage_support import staged

from forgellm.advisor.schemas import RecipeProposal
from forgellm.config.schema import RecipeSection
from forgellm.data.prepare.cleaning import clean_text, has_literal_newlines, literal_newline_share, unescape_newlines
from forgellm.data.prepare.run import prepare_dataset
from forgellm.data.read.readers import open_dataset
from forgellm.data.read.records import BadRow, Record
from forgellm.data.study.profile import study_dataset

JAPANESE = [
    "今日はいい天気ですね。",
    "注文した商品がまだ届きません。",
    "パスワードを忘れてしまいました。再設定の方法を教えてください。",
    "ご迷惑をおかけして申し訳ございません。",
    "返品の手続きについて、詳しく説明いたします。",
]
WESTERN = ["Café crème à emporter, s'il vous plaît", "Größe: 3 €, naïve Fassade – „zitiert“", "¿Qué tal, señor?"]


def read(path: Path) -> tuple[list[Record], list[BadRow], object]:
    dataset = open_dataset(path)
    items = list(dataset)
    return [i for i in items if isinstance(i, Record)], [i for i in items if isinstance(i, BadRow)], dataset


def study(dataset) -> object:
    return study_dataset(dataset.batches(), reading=dataset.reading)


def codes(report) -> dict[str, object]:
    return {f.code: f for f in report.findings}


def qa_csv(pairs: list[tuple[str, str]], eol: str = "\n", header: str = "question,answer", tail: str = "") -> str:
    return header + eol + "".join(f'"{q}","{a}"{tail}{eol}' for q, a in pairs)


PAIRS = [(f"How do I reset password number {i}?", f"Open settings and choose reset, step {i}.") for i in range(40)]


# ---------------------------------------------------------------- 1. spill columns from trailing commas


@pytest.mark.parametrize("header", ["question,answer,,", "question,answer,Unnamed: 2,Unnamed: 3"])
def test_trailing_comma_spill_columns_are_dropped_and_reported(tmp_path, header):
    path = tmp_path / "spill.csv"
    path.write_text(qa_csv(PAIRS, header=header, tail=",,"), encoding="utf-8")
    records, bad, dataset = read(path)
    assert not bad and len(records) == 40
    assert dataset.info.columns == ("question", "answer") and len(dataset.info.dropped_columns) == 2
    assert all(set(r.fields) == {"question", "answer"} for r in records)
    report = study(dataset)
    assert [c["name"] for c in report.columns] == ["question", "answer"]
    finding = codes(report)["spill_columns"]
    assert "2 empty column(s) dropped" in finding.detail and "trailing commas" in finding.detail


def test_rows_with_one_extra_empty_field_are_trimmed_not_rejected(tmp_path):
    path = tmp_path / "extra.csv"
    path.write_text(qa_csv(PAIRS, tail=","), encoding="utf-8")
    records, bad, dataset = read(path)
    assert not bad and len(records) == 40 and records[0].fields["answer"].endswith("step 0.")
    assert dataset.counts.trimmed_rows == 40
    assert "40 rows had empty cells past" in codes(study(dataset))["spill_columns"].detail


def test_a_blank_header_column_with_values_is_kept_and_a_late_value_is_not_lost(tmp_path):
    # The late value sits past the head sample (256 KB) that decides which columns are spill.
    lines = ["question,answer,,"] + [f"q{i}?,a{i},,x{i}" for i in range(25_000)] + ["q9?,a9,late,"]
    path = tmp_path / "kept.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    records, bad, dataset = read(path)
    assert not bad and dataset.info.columns == ("question", "answer", "column_4")
    assert dataset.info.dropped_columns == ("column_3",)
    assert records[0].fields == {"question": "q0?", "answer": "a0", "column_4": "x0"}
    assert records[-1].fields["column_3"] == "late"  # the spill column had a value after all: kept


def test_prepare_reads_trailing_comma_rows_without_rejects(make_project, tmp_path):
    path = tmp_path / "extra.csv"
    path.write_text(qa_csv(PAIRS, header="question,answer,,", tail=",,,"), encoding="utf-8")
    result = prepare_dataset(*staged(make_project()), path)
    assert result.stats.rows_read == 40 and result.stats.rejected == 0
    assert result.stats.reading["dropped_columns"] == ["column_3", "column_4"]


# ---------------------------------------------------------------- 2. legacy encodings


def _japanese_csv(rows: int, every: int) -> str:
    """CRLF lines; every ``every``-th row Japanese with a quoted cell spanning two lines, the rest ASCII."""
    pairs = []
    for i in range(rows):
        if i % every == 0:
            pairs.append((JAPANESE[i % 5], JAPANESE[(i + 3) % 5] + "\r\n" + JAPANESE[(i + 1) % 5]))
        else:
            pairs.append((f"order {i} status", f"shipped on day {i}"))
    return qa_csv(pairs, eol="\r\n")


@pytest.mark.parametrize(("codec", "rows", "every"), [("shift_jis", 30, 1), ("shift_jis", 200, 60), ("cp932", 3, 1)])
def test_shift_jis_crlf_csv_round_trips(tmp_path, codec, rows, every):
    text = _japanese_csv(rows, every)
    path = tmp_path / "ja.csv"
    path.write_bytes(text.encode(codec))
    records, bad, dataset = read(path)
    assert dataset.info.encoding == "cp932" and not dataset.info.encoding_per_line
    assert not bad and len(records) == rows
    expected = [(q, a.replace("\r\n", "\n")) for q, a in (line for line in _pairs(rows, every))]
    assert [(r.fields["question"], r.fields["answer"]) for r in records] == expected
    report = study(dataset)
    assert report.reading["encoding"] == "cp932" and "cp932" in codes(report)["read_encoding"].title


def _pairs(rows: int, every: int):
    for i in range(rows):
        if i % every == 0:
            yield JAPANESE[i % 5], JAPANESE[(i + 3) % 5] + "\r\n" + JAPANESE[(i + 1) % 5]
        else:
            yield f"order {i} status", f"shipped on day {i}"


def test_cp932_only_characters_round_trip(tmp_path):
    # charset-normalizer names JIS X 0213 for this; read so, the fullwidth tilde would become a wave dash.
    pairs = [(JAPANESE[i % 5] + "～①", JAPANESE[(i + 1) % 5]) for i in range(10)]
    path = tmp_path / "win.csv"
    path.write_bytes(qa_csv(pairs, eol="\r\n").encode("cp932"))
    records, bad, dataset = read(path)
    assert dataset.info.encoding == "cp932" and not bad
    assert [(r.fields["question"], r.fields["answer"]) for r in records] == pairs


@pytest.mark.parametrize("codec", ["cp1252", "latin-1"])
def test_western_code_pages_decode_whole_file(tmp_path, codec):
    latin_1 = ["Café crème à emporter, s'il vous plaît", "Größe: 3 EUR, naïve Fassade", "¿Qué tal, señor?"]
    texts = WESTERN if codec == "cp1252" else latin_1
    pairs = [(texts[i % 3], texts[(i + 1) % 3]) for i in range(30)]
    path = tmp_path / "west.csv"
    path.write_bytes(qa_csv(pairs, eol="\r\n").encode(codec))
    records, bad, dataset = read(path)
    assert dataset.info.encoding in ("cp1252", "latin_1", "iso8859-1") and not bad
    assert [(r.fields["question"], r.fields["answer"]) for r in records] == pairs
    assert study(dataset).reading["encoding"] == dataset.info.encoding


# ---------------------------------------------------------------- 3. line ends


@pytest.mark.parametrize("eol", ["\r\n", "\r"])
def test_crlf_and_cr_files_leave_no_carriage_return_and_keep_inner_newlines(tmp_path, eol):
    pairs = [(f"question {i}?", f"first line {i}{eol}second line") for i in range(20)]
    path = tmp_path / "lines.csv"
    path.write_bytes(qa_csv(pairs, eol=eol).encode("utf-8"))
    records, bad, _ = read(path)
    assert not bad and len(records) == 20
    assert all("\r" not in v for r in records for v in r.fields.values())
    assert records[3].fields == {"question": "question 3?", "answer": "first line 3\nsecond line"}


# ---------------------------------------------------------------- 4. thousands of blank rows


def _blank_file(path: Path, data_rows: int = 20) -> Path:
    head = qa_csv(PAIRS[: data_rows // 2])
    tail = "".join(f'"{q}","{a}"\n' for q, a in PAIRS[data_rows // 2 : data_rows])
    path.write_text(head + "\n" * 5000 + ",\n" * 1500 + ",,,\n" * 1500 + tail + "\n" * 300 + ",,\n" * 300, "utf-8")
    return path


def test_thousands_of_blank_rows_are_skipped_counted_and_reported(tmp_path):
    records, bad, dataset = read(_blank_file(tmp_path / "blank.csv"))
    assert not bad and len(records) == 20
    assert dataset.counts.blank_rows == 5000 + 3000 + 600
    report = study(dataset)
    assert report.rows == 20 and report.unreadable["rows"] == 0
    assert codes(report)["blank_rows"].title == "8,600 blank rows skipped"


def test_blank_rows_before_the_first_data_row_are_not_an_empty_file(tmp_path):
    path = tmp_path / "late.csv"
    path.write_text("question,answer\n" + "\n" * 3000 + ",\n" * 3000 + "q?,a\n", encoding="utf-8")
    records, bad, _ = read(path)
    assert not bad and [r.fields for r in records] == [{"question": "q?", "answer": "a"}]


def test_prepare_skips_blank_rows_without_tripping_the_error_rate(make_project, tmp_path):
    path = _blank_file(tmp_path / "blank.csv", data_rows=40)
    result = prepare_dataset(*staged(make_project()), path)
    assert result.stats.rows_read == 40 and result.stats.rejected == 0
    assert result.stats.reading["blank_rows"] == 8600


def test_blank_rows_are_read_fast(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text(qa_csv(PAIRS) + "\n" * 200_000 + ",\n" * 200_000 + qa_csv(PAIRS, header=""), encoding="utf-8")
    started = time.perf_counter()
    records, bad, dataset = read(path)
    assert len(records) == 80 and dataset.counts.blank_rows == 400_001  # the empty header line counts too
    assert time.perf_counter() - started < 5


# ---------------------------------------------------------------- 5. literal \n escapes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"Hello,\nthanks for writing.\n\nBest", "Hello,\nthanks for writing.\n\nBest"),
        (r"Step one\r\nStep two\tdone", "Step one\nStep two\tdone"),
        (r'Use `print("\n")` to print\nNext', 'Use `print("\\n")` to print\nNext'),
        (r'Call print("a\nb") first\nthen go', 'Call print("a\\nb") first\nthen go'),
        ('```py\\nprint("\\n")\\n```\\nDone', '```py\nprint("\\n")\n```\nDone'),
        (r"Don't stop.\nI can't", "Don't stop.\nI can't"),
        ("a real\nline break and a literal \\n", "a real\nline break and a literal \\n"),
        (r"path C:\new\table.txt kept", r"path C:\new\table.txt kept"),
        (r"a backslash \\n stays", r"a backslash \\n stays"),
        (r"only\ttabs", r"only\ttabs"),
    ],
)
def test_unescape_newlines(text, expected):
    assert unescape_newlines(text) == expected
    assert clean_text(text, ["unescape_newlines"]) == expected


def test_literal_newline_share_and_the_schemas_accept_the_step():
    values = [r"a\nb", r"c\nd", "plain", "real\nbreak", "", None, 3]
    assert literal_newline_share(values) == pytest.approx(2 / 4)
    assert literal_newline_share([]) == 0.0 and has_literal_newlines(r"x\ny")
    steps = ["unicode_nfc", "unescape_newlines", "strip_whitespace"]
    assert RecipeSection(cleaning=steps).cleaning == steps
    proposal = RecipeProposal(format="qa", task_type="qa", cleaning=[*steps, "collapse_spaces", "strip_html"])
    assert "unescape_newlines" in proposal.cleaning


def test_study_reports_literal_escapes_with_the_fix_and_prepare_applies_it(make_project, tmp_path):
    pairs = [(f"Question {i}?", rf"Hello,\nyour order {i} has shipped.\n\nRegards") for i in range(30)]
    path = tmp_path / "escaped.csv"
    path.write_text(qa_csv(pairs), encoding="utf-8")
    _, _, dataset = read(path)
    finding = codes(study(dataset))["literal_newlines"]
    assert finding.severity == "warning" and finding.count == 30 and "'answer'" in finding.title
    assert "data.recipe.cleaning: [unicode_nfc, unescape_newlines, strip_whitespace]" in finding.fix
    steps = ["unicode_nfc", "unescape_newlines", "strip_whitespace"]
    recipe = {"columns": {"user": "question", "assistant": "answer"}, "cleaning": steps}
    project = make_project(data={"format": "qa", "recipe": recipe})
    result = prepare_dataset(*staged(project), path)
    rows = [json.loads(line) for line in (result.output_dir / "train.jsonl").read_text("utf-8").splitlines()]
    answer = rows[0]["messages"][-1]["content"]
    assert "\n\nRegards" in answer and "\\n" not in answer
