"""Findings about how the file was read: its encoding, the empty spill columns and blank rows the reader
skipped, and columns whose line breaks were exported as literal "\\n" (derived from the report's numbers)."""

from __future__ import annotations

from forgellm.data.study.report import Finding, StudyReport

_UTF8 = frozenset({"utf-8", "utf-8-sig", "ascii"})
# Share of a column's values with literal "\n" from which the finding is a warning: the model would learn to
# write backslash-n instead of line breaks.
LITERAL_NEWLINES_WARN_SHARE = 0.1
CLEANING_FIX = "data.recipe.cleaning: [unicode_nfc, unescape_newlines, strip_whitespace]"


def reading_findings(report: StudyReport) -> list[Finding]:
    return [*_encoding_read(report), *_spill(report), *_blank(report), *_literal_newlines(report)]


def _encoding_read(report: StudyReport) -> list[Finding]:
    encoding = report.reading.get("encoding")
    if not encoding or encoding in _UTF8:
        return []
    return [
        Finding(
            "read_encoding",
            "info",
            f"Text encoding: {encoding}",
            f"The file is not UTF-8; it was read as {encoding} ({report.reading.get('encoding_how')}).",
            "Nothing to do: prepare reads it the same way and writes UTF-8. If texts look wrong in the samples, "
            "convert the file to UTF-8 yourself (e.g. `iconv -f CP932 -t UTF-8 in.csv > out.csv`).",
            report.rows,
        )
    ]


def _spill(report: StudyReport) -> list[Finding]:
    dropped, trimmed = report.reading.get("dropped_columns") or [], report.reading.get("trimmed_rows", 0)
    if not dropped and not trimmed:
        return []
    parts = []
    if dropped:
        parts.append(
            f"{len(dropped)} empty column(s) dropped ({', '.join(dropped[:8])}): no header name and no value in "
            "the sampled rows, made by delimiters at the ends of the lines (trailing commas)"
        )
    if trimmed:
        parts.append(f"{trimmed:,} rows had empty cells past the header's last column: trimmed, not rejected")
    return [
        Finding(
            "spill_columns",
            "info",
            f"{len(dropped)} empty spill columns dropped" if dropped else f"{trimmed:,} rows with trailing commas",
            "; ".join(parts) + ".",
            "Nothing to do: prepare reads the file the same way (re-export without trailing delimiters to avoid it).",
            len(dropped) or trimmed,
        )
    ]


def _blank(report: StudyReport) -> list[Finding]:
    blank = report.reading.get("blank_rows", 0)
    if not blank:
        return []
    return [
        Finding(
            "blank_rows",
            "info",
            f"{blank:,} blank rows skipped",
            f"{blank:,} empty lines or rows of only delimiters were skipped; they are not records and do not count "
            "toward preprocessing.max_error_rate.",
            "Nothing to do.",
            blank,
        )
    ]


def _literal_newlines(report: StudyReport) -> list[Finding]:
    findings = []
    for column in report.columns:
        count = column.get("literal_newlines", 0)
        if not count:
            continue
        share = count / max(1, column["filled"])
        findings.append(
            Finding(
                "literal_newlines",
                "warning" if share >= LITERAL_NEWLINES_WARN_SHARE else "info",
                f"Literal \\n in column {column['name']!r} ({share:.0%} of its values)",
                f"{count:,} values of {column['name']!r} hold line breaks written as a backslash and n (escaped on "
                "export) and no real line break: the model would learn to write \\n.",
                f"Turn them into real line breaks: `{CLEANING_FIX}` in forge.yaml (code in quotes or backticks "
                "is kept as it is).",
                count,
            )
        )
    return findings
