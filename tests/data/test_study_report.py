"""The study's renderings: self-contained HTML with SVG charts and escaped user text, JSON, terminal."""

from __future__ import annotations

import io
import json
import re

from rich.console import Console

from forgellm.data.read.records import Record
from forgellm.data.study.html import render_study_terminal, write_study_html, write_study_json
from forgellm.data.study.profile import study_dataset
from forgellm.data.study.report import StudyReport

EVIL = "<script>alert('x')</script>"


def _report() -> StudyReport:
    records = [
        Record(i + 2, {"question": f"How do I reset item {i}? {EVIL}", "answer": f"Press reset {i}.", "kind": k})
        for i, k in enumerate(["billing"] * 30 + ["tech"] * 3)
    ]
    records.append(
        Record(40, {"question": "Where is my {order_id}?", "answer": "mail me at jane.doe@corp.com", "kind": EVIL})
    )
    return study_dataset(records, sample_note="all 34 rows")


def test_html_is_self_contained_has_charts_and_escapes_user_text(tmp_path):
    path = write_study_html(_report(), tmp_path / "reports" / "study.html")
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()  # neither ours nor the data's
    assert "&lt;script&gt;" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "http" not in page.lower()
    assert page.count("<svg") >= 4  # chars + tokens histograms, label bars, languages, missing values
    assert "<rect" in page
    assert "jane.doe@corp.com" not in page and "j***@corp.com" in page
    assert "estimate:words" in page
    assert not list(tmp_path.glob("reports/.*.tmp"))  # atomic write left no temp file


def test_json_is_written_atomically_and_round_trips(tmp_path):
    report = _report()
    path = write_study_json(report, tmp_path / "study.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data == report.to_dict()
    assert StudyReport.from_dict(data) == report
    assert {f["severity"] for f in data["findings"]} <= {"info", "warning", "error"}
    assert list(tmp_path.iterdir()) == [path]


def test_terminal_summary_lists_findings_labels_and_tokens():
    buffer = io.StringIO()
    render_study_terminal(_report(), Console(file=buffer, width=160, color_system=None))
    out = buffer.getvalue()
    assert "34 rows" in out and "warning" in out
    assert "Unfilled template placeholders" in out
    assert "Labels" in out and "billing" in out
    assert "Tokens (estimate:words)" in out
