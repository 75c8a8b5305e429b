"""Bad rows never stop a run and are never trained silently (issue 15): every per-row failure goes to
rejects with its line and reason, at any place in the file; a file with no usable row stops before
forge.yaml changes; study flags with the same rule prepare rejects with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stage_support import staged

from forgellm.data.prepare.run import prepare_dataset
from forgellm.data.read.readers import open_dataset
from forgellm.data.study.run import study_file
from forgellm.errors import ErrorCode, ForgeError

SPLITS = ("train.jsonl", "val.jsonl", "test.jsonl")


def chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def line_of(row: dict) -> bytes:
    return json.dumps(row).encode() + b"\n"


def rows_of(folder: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (folder / name).read_text(encoding="utf-8").splitlines()]


def trained(folder: Path) -> list[dict]:
    return [row for name in SPLITS for row in rows_of(folder, name)]


def good_rows(n: int, pad: int = 0) -> list[bytes]:
    return [line_of(chat(f"Question {i}? " + "x" * pad, f"Answer number {i}.")) for i in range(n)]


# ------------------------------------------------------------------------ a file without a usable row


def test_all_invalid_jsonl_stops_before_forge_yaml_changes_and_the_project_still_works(make_project, tmp_path):
    project = make_project()
    before = (project / "forge.yaml").read_bytes()
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{broken\n[1, 2]\n"just a string"\n{"messages": [\n' * 5)
    with pytest.raises(ForgeError) as caught:
        prepare_dataset(*staged(project), bad)
    error = caught.value
    assert error.code == ErrorCode.DATA_ROWS_REJECTED and "no usable row" in error.message
    assert (project / "forge.yaml").read_bytes() == before  # no format: text / stage: cpt left behind
    rejects = [json.loads(line) for line in Path(error.data["rejects"]).read_text().splitlines()]
    assert [r["line"] for r in rejects] == list(range(1, 21))
    assert all(r["reason"] for r in rejects) and "not an object" in rejects[1]["reason"]
    assert str(error.data["rejects"]) in error.fix

    good = tmp_path / "good.jsonl"
    good.write_bytes(b"".join(good_rows(30)))
    result = prepare_dataset(*staged(project), good)
    assert result.stats.kept == 30 and result.config.data.format == "messages"
    assert result.config.training.stage != "cpt"


def test_study_of_a_file_without_usable_rows_reports_it_and_changes_nothing(make_project, tmp_path):
    project = make_project()
    before = (project / "forge.yaml").read_bytes()
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"{broken\n[1, 2]\n" * 10)
    report = study_file(*staged(project), bad).report
    assert report.unreadable["rows"] == 20 and report.unreadable["lines"][:3] == [1, 2, 3]
    assert {"no_usable_records", "unreadable_rows"} <= {finding.code for finding in report.findings}
    assert (project / "forge.yaml").read_bytes() == before


def test_show_recipe_on_a_file_without_usable_rows_writes_nothing(make_project, tmp_path):
    from forgellm.data.prepare.detect import detect_recipe

    project = make_project()
    before = (project / "forge.yaml").read_bytes()
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"{broken\n" * 3)
    with pytest.raises(ForgeError):
        detect_recipe(*staged(project)[:1], bad, staged(project)[1])
    assert (project / "forge.yaml").read_bytes() == before


def test_all_invalid_rows_for_a_cpt_recipe_are_an_error_not_an_index_error(make_project, tmp_path):
    """forge.yaml already says text / cpt: the chunks hold only rejects, and the run stops with them."""
    project = make_project(data={"format": "text", "recipe": {"columns": {"text": "text"}}}, training={"stage": "cpt"})
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"{broken\n" * 10)
    with pytest.raises(ForgeError) as caught:
        prepare_dataset(*staged(project), bad)
    assert caught.value.code == ErrorCode.DATA_ROWS_REJECTED and "10 of 10 rows" in caught.value.message


def test_a_failed_prepare_leaves_forge_yaml_as_it_was(make_project, tmp_path):
    """The detected format is recorded in forge.yaml only once the data prepared successfully."""
    project = make_project(preprocessing={"filters": {"min_chars": 1000}})
    before = (project / "forge.yaml").read_bytes()
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"".join(good_rows(20)))
    with pytest.raises(ForgeError) as caught:
        prepare_dataset(*staged(project), data)
    assert caught.value.code == ErrorCode.DATA_NOTHING_LEFT
    assert (project / "forge.yaml").read_bytes() == before


# ------------------------------------------------------------------------------------------ NUL


NUL_RAW = b'{"messages": [{"role": "user", "content": "Hello\x00there?"}, {"role": "assistant", "content": "Hi."}]}\n'
NUL_ESCAPED = line_of(chat("Hello\u0000there?", "Hi, a NUL row."))


@pytest.mark.parametrize("where", ["top", "beyond the sniffed sample"])
@pytest.mark.parametrize("row", [NUL_RAW, NUL_ESCAPED], ids=["raw byte", "escaped"])
def test_a_nul_row_is_rejected_wherever_it_is(make_project, tmp_path, row, where):
    rows = good_rows(800, pad=300)  # ~310 KB: past the 256 KB the readers sniff
    at = 2 if where == "top" else 760
    rows.insert(at, row)
    data = tmp_path / "nul.jsonl"
    data.write_bytes(b"".join(rows))
    result = prepare_dataset(*staged(make_project()), data)
    rejects = rows_of(result.output_dir, "rejects.jsonl")
    assert [(r["line"], "NUL" in r["reason"]) for r in rejects] == [(at + 1, True)]
    assert result.stats.kept == 800 and not any("\x00" in row["text"] for row in trained(result.output_dir))


def test_a_nul_cell_in_a_csv_is_rejected(make_project, tmp_path):
    lines = ["question,answer"] + [f"Question {i}?,Answer {i}." for i in range(40)]
    lines[30] = "Broken\x00question?,Answer."
    data = tmp_path / "nul.csv"
    data.write_bytes("\n".join(lines).encode() + b"\n")
    result = prepare_dataset(*staged(make_project()), data)
    assert [(r["line"], "NUL" in r["reason"]) for r in rows_of(result.output_dir, "rejects.jsonl")] == [(31, True)]


def test_a_binary_file_is_still_refused_as_a_whole(tmp_path):
    data = tmp_path / "blob.jsonl"
    data.write_bytes(b"".join(bytes([i % 7, 0, 65, 10]) for i in range(200)))
    with pytest.raises(ForgeError) as caught:
        open_dataset(data)
    assert "looks like a binary file" in caught.value.message and "NUL" in caught.value.message


def test_study_flags_nul_rows_with_their_lines(make_project, tmp_path):
    rows = good_rows(30)
    rows.insert(20, NUL_ESCAPED)
    data = tmp_path / "nul.jsonl"
    data.write_bytes(b"".join(rows))
    report = study_file(*staged(make_project()), data).report
    assert report.encoding["nul"]["rows"] == 1 and report.encoding["nul"]["lines"] == [21]
    assert "nul" in {finding.code for finding in report.findings}


# ------------------------------------------------------------------------ mixed encodings


def mixed_file(path: Path) -> Path:
    """20 UTF-8 rows and 20 cp1252 rows (two exports concatenated), then a line neither decodes."""
    utf8 = [line_of(chat(f"Où est le café {i}?", f"It’s naïve to ask, n°{i}.")) for i in range(20)]
    cp1252 = [
        json.dumps(chat(f"Qué día {i}?", f"Mañana — {i}."), ensure_ascii=False).encode("cp1252") + b"\n"
        for i in range(20)
    ]
    undecodable = b'{"messages": [{"role": "user", "content": "Bad \x81\x8d bytes?"}, ' + (
        b'{"role": "assistant", "content": "\xc3 broken \x90."}]}\n'
    )
    path.write_bytes(b"".join(utf8 + cp1252) + undecodable)
    return path


def test_mixed_utf8_and_cp1252_rows_are_each_read_in_their_encoding(make_project, tmp_path):
    data = mixed_file(tmp_path / "mixed.jsonl")
    info = open_dataset(data).info
    assert info.encoding_per_line, info
    result = prepare_dataset(*staged(make_project()), data)
    texts = " ".join(row["text"] for row in trained(result.output_dir))
    assert texts.count("café") == 20 and texts.count("It’s naïve") == 20 and texts.count("Mañana —") == 20
    assert "Ã" not in texts and "â€" not in texts and "\ufffd" not in texts
    rejects = rows_of(result.output_dir, "rejects.jsonl")
    assert [r["line"] for r in rejects] == [41] and "U+FFFD" in rejects[0]["reason"]


def test_study_sees_no_mojibake_in_a_mixed_file(make_project, tmp_path):
    report = study_file(*staged(make_project()), mixed_file(tmp_path / "mixed.jsonl")).report
    assert report.encoding["mojibake"]["rows"] == 0
    assert report.encoding["replacement_chars"]["lines"] == [41]


# -------------------------------------------------------------------- U+FFFD and mojibake


def test_prepare_rejects_the_damage_study_flags(make_project, tmp_path):
    rows = good_rows(30)
    damaged = {
        5: chat("Where is my order \ufffd?", "On its way."),
        12: chat("Is the cafÃ© open?", "Yes, until six."),
        18: chat("Can I return it?", "Yes, itâ€™s free."),
    }
    for index, row in damaged.items():
        rows[index] = line_of(row)
    rows[25] = line_of(chat("Grüße aus der Straße, naïve façade — ça va?", "Ja, très bien, señor."))
    data = tmp_path / "damaged.jsonl"
    data.write_bytes(b"".join(rows))
    project = make_project()
    report = study_file(*staged(project), data).report
    flagged = sorted(report.encoding["replacement_chars"]["lines"] + report.encoding["mojibake"]["lines"])
    result = prepare_dataset(*staged(project), data)
    rejects = rows_of(result.output_dir, "rejects.jsonl")
    assert [r["line"] for r in rejects] == flagged == [6, 13, 19]
    assert "U+FFFD" in rejects[0]["reason"] and all("mojibake" in r["reason"] for r in rejects[1:])
    assert result.stats.kept == 27 and any("naïve façade" in row["text"] for row in trained(result.output_dir))
