"""Findings of a data study, derived from the report's numbers alone (severity rules: see study.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from forgellm.data.study.reading_findings import reading_findings
from forgellm.data.study.report import Finding, StudyReport

MAX_ERROR_RATE = 0.2  # the default of preprocessing.max_error_rate


def build_findings(report: StudyReport) -> list[Finding]:
    findings: list[Finding] = []
    for rule in _RULES:
        findings.extend(rule(report))
    return findings


def _pct(part: int, whole: int) -> str:
    share = part / whole if whole else 0.0
    return f"{share:.1%}" if share >= 0.001 or not part else "<0.1%"


def _names(names: dict[str, int], top: int = 5) -> str:
    return ", ".join(f"{name} ({rows} rows)" for name, rows in list(names.items())[:top])


def _usable(report: StudyReport) -> list[Finding]:
    read = report.rows + report.unreadable["rows"]
    if report.rows and (report.examples is None or report.examples["made"]):
        return []
    return [
        Finding(
            "no_usable_records",
            "error",
            "No usable records",
            f"{read} records read, none could be used for training.",
            "Check the file format and data.recipe.columns in forge.yaml (forge plan fills them).",
            read,
        )
    ]


def _unreadable(report: StudyReport) -> list[Finding]:
    bad, read = report.unreadable["rows"], report.rows + report.unreadable["rows"]
    if not bad:
        return []
    severity = "error" if bad / read > MAX_ERROR_RATE else "warning"
    reasons = "; ".join(f"{r} ({n})" for r, n in report.unreadable["reasons"].items())
    return [
        Finding(
            "unreadable_rows",
            severity,
            f"{bad} unreadable rows ({_pct(bad, read)})",
            f"Rows that could not be parsed: {reasons}.",
            "Repair those lines in the file; prepare skips them into rejects.jsonl and stops when more than "
            "preprocessing.max_error_rate of the rows are unreadable.",
            bad,
            report.unreadable["lines"],
        )
    ]


def _rejects(report: StudyReport) -> list[Finding]:
    if not report.examples or not report.examples["rejected"]["rows"]:
        return []
    rejected = report.examples["rejected"]
    bad = rejected["rows"]
    severity = "error" if bad / max(1, report.rows) > MAX_ERROR_RATE else "warning"
    reasons = "; ".join(f"{r} ({n})" for r, n in rejected["reasons"].items())
    return [
        Finding(
            "recipe_rejects",
            severity,
            f"{bad} records do not fit the recipe ({_pct(bad, report.rows)})",
            f"Reasons: {reasons}.",
            "Check data.format and data.recipe.columns / role_map in forge.yaml; rejected records are written "
            "to rejects.jsonl by prepare.",
            bad,
            rejected["lines"],
        )
    ]


def _empty_and_short(report: StudyReport) -> list[Finding]:
    findings = []
    empty, short = report.records["empty"], report.records["short"]
    if empty["rows"]:
        findings.append(
            Finding(
                "empty_records",
                "warning",
                f"{empty['rows']} empty records",
                "Every field of these records is missing or blank.",
                "Remove them, or keep preprocessing.filters.drop_empty: true (the default) so prepare drops them.",
                empty["rows"],
                empty["lines"],
            )
        )
    if short["rows"]:
        limit = short["min_chars"]
        findings.append(
            Finding(
                "short_records",
                "warning" if short["rows"] / max(1, report.rows) >= 0.01 else "info",
                f"{short['rows']} very short records (< {limit} characters)",
                "The answer (or main text) has almost no content; the model learns little from it.",
                f"Set preprocessing.filters.min_chars: {limit} to drop replies shorter than {limit} characters.",
                short["rows"],
                short["lines"],
            )
        )
    return findings


def _duplicates(report: StudyReport) -> list[Finding]:
    findings = []
    records, texts, near = (report.duplicates[k] for k in ("records", "texts", "near"))
    if records["rows"]:
        findings.append(
            Finding(
                "exact_duplicates",
                "warning" if records["rows"] / report.rows >= 0.01 else "info",
                f"{records['rows']} exact duplicate records ({_pct(records['rows'], report.rows)})",
                f"Records identical to an earlier one, e.g. lines {_pairs(records['pairs'])}.",
                "Set preprocessing.filters.drop_exact_duplicates: true (the default) to drop them.",
                records["rows"],
                records["lines"],
            )
        )
    extra = texts["rows"] - records["rows"]
    if texts["rows"] and extra > 0:
        column = report.main_text_column or "first user turn"
        findings.append(
            Finding(
                "duplicate_texts",
                "warning" if texts["rows"] / report.rows >= 0.01 else "info",
                f"{texts['rows']} records repeat an earlier {column} ({_pct(texts['rows'], report.rows)})",
                f"The same prompt text appears more than once (e.g. lines {_pairs(texts['pairs'])}); "
                "with different answers it teaches inconsistency, with the same it over-weights them.",
                "Deduplicate the prompts before training, or set preprocessing.filters.drop_near_duplicates: "
                "true, which also drops identical prompts.",
                texts["rows"],
                texts["lines"],
            )
        )
    if near["rows"]:
        scope = "" if near["checked"] < near["limit"] else f" (first {near['limit']} texts checked)"
        findings.append(
            Finding(
                "near_duplicates",
                "warning" if near["rows"] / max(1, near["checked"]) >= 0.05 else "info",
                f"{near['rows']} near-duplicate records{scope}",
                f"Texts with estimated Jaccard similarity >= {near['threshold']} to an earlier one, e.g. lines "
                f"{_pairs(near['pairs'])}.",
                "Set preprocessing.filters.drop_near_duplicates: true "
                f"(near_duplicate_threshold: {near['threshold']}).",
                near["rows"],
                near["lines"],
            )
        )
    return findings


def _pairs(pairs: list[list[Any]]) -> str:
    return ", ".join(f"{p[0]}~{p[1]}" for p in pairs[:3])


_ENCODING = {
    "mojibake": ("Mojibake (UTF-8 decoded as Latin-1/cp1252)", 'Text like "Ã©" or "â€™" where "é" or "’" was meant.'),
    "control_chars": ("Control characters", "Invisible control characters (other than tab and newline)."),
    "replacement_chars": ("U+FFFD replacement characters", "Characters lost when the file was decoded: '\ufffd'."),
    "nul": ("NUL characters (U+0000)", "Zero characters inside the text: damaged or binary content."),
}


def _encoding(report: StudyReport) -> list[Finding]:
    findings = []
    for code, (title, detail) in _ENCODING.items():
        hits = report.encoding.get(code)  # "nul" is missing from a study.json of an older Forge
        if hits and hits["rows"]:
            findings.append(
                Finding(
                    code,
                    "warning",
                    f"{title} in {hits['rows']} records",
                    detail,
                    "Re-export the file as UTF-8 from its source; fix mojibake with ftfy (ftfy.fix_text) "
                    "before training, or remove the affected records. Prepare does not train records with mojibake, "
                    "U+FFFD or NUL in their text: it writes them to rejects.jsonl.",
                    hits["rows"],
                    hits["lines"],
                )
            )
    return findings


def _placeholders(report: StudyReport) -> list[Finding]:
    findings = []
    single, double = report.placeholders["single"], report.placeholders["double"]
    if single["rows"]:
        top = next(iter(single["names"]))
        findings.append(
            Finding(
                "placeholders_single",
                "warning",
                f"Unfilled template placeholders in {single['rows']} records",
                f"Placeholders: {_names(single['names'])}. The model will learn to write them literally.",
                f"Fill or remove placeholders before training; {single['names'][top]} rows contain {top}.",
                single["rows"],
                single["lines"],
            )
        )
    if double["rows"]:
        findings.append(
            Finding(
                "placeholders_double",
                "info",
                f"Anonymisation placeholders in {double['rows']} records",
                f"Placeholders: {_names(double['names'])}. The model will learn to emit them in answers.",
                "Replace them with realistic values, or keep them and fill them in your application at answer time.",
                double["rows"],
                double["lines"],
            )
        )
    return findings


def _pii(report: StudyReport) -> list[Finding]:
    if not report.pii:
        return []
    rows = max(hits["rows"] for hits in report.pii.values())
    lines = sorted({line for hits in report.pii.values() for line in hits["lines"]})[:10]
    kinds = ", ".join(
        f"{kind}: {hits['rows']} records (e.g. {', '.join(hits['samples'])})" for kind, hits in report.pii.items()
    )
    return [
        Finding(
            "pii",
            "warning",
            f"Personal data hints in up to {rows} records",
            f"{kinds}. Values are masked here.",
            "Set preprocessing.pii: mask (or drop), or leave personal columns out of data.recipe.columns.",
            rows,
            lines,
        )
    ]


def _lengths(report: StudyReport) -> list[Finding]:
    findings = []
    trunc, suggested = report.truncation, report.suggested_max_length
    fit = f"model.max_length: {suggested['value']} covers {suggested['covers']:.0%} of examples" if suggested else ""
    if trunc and trunc["examples_over"]:
        share = trunc["examples_share"]
        severity = "error" if share > 0.5 else "warning" if share > 0.01 else "info"
        findings.append(
            Finding(
                "truncation",
                severity,
                f"{trunc['examples_over']} examples longer than model.max_length {trunc['max_length']} ({share:.1%})",
                f"{trunc['tokens_share']:.1%} of all tokens lie past max_length ({report.token_counter}).",
                f"Set {fit}; or keep it and choose preprocessing.truncation: drop (skip them) or truncate (cut).",
                trunc["examples_over"],
                trunc["lines"],
            )
        )
    elif suggested and report.max_length is None:
        tokens = report.lengths["tokens"]
        findings.append(
            Finding(
                "max_length",
                "info",
                f"Token lengths: p50 {tokens['p50']:g}, p99 {tokens['p99']:g}, max {tokens['max']}",
                f"Counted with {report.token_counter}.",
                f"Set {fit}.",
                0,
            )
        )
    outliers = report.records["outliers"]
    if outliers["rows"]:
        findings.append(
            Finding(
                "length_outliers",
                "info",
                f"{outliers['rows']} unusually long records",
                f"Longer than {outliers['upper']:g} characters ({outliers['method']}).",
                "Look at them: logs, pasted documents or runaway replies are often in there; set "
                f"preprocessing.filters.max_chars: {int(outliers['upper'])} to drop them.",
                outliers["rows"],
                outliers["lines"],
            )
        )
    return findings


def _columns(report: StudyReport) -> list[Finding]:
    findings = []
    named = [n for v in report.recipe_columns.values() for n in (v if isinstance(v, list) else [v])]
    used = {report.main_text_column, *named} - {None}
    for column in report.columns:
        missing = column["missing"]
        # Without a recipe, long free-text columns are the ones a recipe would map to user/assistant.
        text_like = not report.recipe_columns and column["type"] == "string" and column["mean_chars"] >= 20
        if missing["share"] >= 0.05 or (column["name"] in used and missing["total"]):
            findings.append(_missing_finding(column, column["name"] in used or text_like))
        if column["distinct"] == 1 and column["filled"] >= 10:
            findings.append(
                Finding(
                    "constant_column",
                    "info",
                    f"Column '{column['name']}' has a single value",
                    f"Every filled row says {next(iter(column['values']))!r}; it carries no information.",
                    "Leave it out of data.recipe.columns (or use it as data.recipe.system_prompt if it is one).",
                    column["filled"],
                )
            )
        shares = column["types"]
        if shares and max(shares.values()) < 0.9 and column["filled"] >= 10:
            mix = ", ".join(f"{t} {s:.0%}" for t, s in shares.items())
            findings.append(
                Finding(
                    "mixed_types",
                    "info",
                    f"Column '{column['name']}' mixes types",
                    f"Values are {mix}.",
                    "Check the column for stray values (e.g. 'n/a' in a number column) and clean them at the source.",
                    column["filled"],
                )
            )
    return findings


def _missing_finding(column: dict[str, Any], used: bool) -> Finding:
    """Warning for a (likely) training-text column, info for metadata columns."""
    missing = column["missing"]
    parts = ", ".join(f"{missing[k]} {k}" for k in ("none", "empty", "whitespace") if missing[k])
    return Finding(
        "missing_values",
        "warning" if used and (missing["share"] >= 0.01 or missing["total"] >= 10) else "info",
        f"Column '{column['name']}' is missing in {missing['total']} rows ({missing['share']:.0%})",
        f"Missing values: {parts}.",
        "If the recipe uses this column, keep preprocessing.filters.drop_empty: true (rows without it are "
        "dropped) or fill it; otherwise leave it out of data.recipe.columns.",
        missing["total"],
        missing["lines"],
    )


def _labels(report: StudyReport) -> list[Finding]:
    if not report.label_column or report.label_column not in report.labels:
        return []
    label = report.labels[report.label_column]
    ratio = label["imbalance_ratio"]
    counts = label["counts"]
    if ratio < 3:
        return []
    top, low = max(counts, key=counts.get), min(counts, key=counts.get)
    return [
        Finding(
            "label_imbalance",
            "warning" if ratio >= 10 else "info",
            f"Labels of '{report.label_column}' are imbalanced ({ratio:g}x)",
            f"'{top}' has {counts[top]} rows, '{low}' has {counts[low]}.",
            f"Set preprocessing.balance: true and preprocessing.split.method: stratified with "
            f"split.column: {report.label_column}.",
            counts[low],
        )
    ]


def _languages(report: StudyReport) -> list[Finding]:
    if len(report.languages) < 2 or report.languages[0]["share"] > 0.95:
        return []
    mix = ", ".join(f"{lang['language']} {lang['share']:.0%}" for lang in report.languages[:4])
    return [
        Finding(
            "language_mix",
            "info",
            "Several languages",
            f"Main texts by language: {mix}.",
            "Check that the base model (model.ref) handles every language you train on; a multilingual model "
            "such as Qwen fits mixed data best.",
            sum(lang["count"] for lang in report.languages[1:]),
        )
    ]


_RULES: list[Callable[[StudyReport], list[Finding]]] = [
    _usable,
    _unreadable,
    _rejects,
    _empty_and_short,
    _duplicates,
    _encoding,
    _placeholders,
    _pii,
    _lengths,
    _columns,
    _labels,
    _languages,
    reading_findings,
]
