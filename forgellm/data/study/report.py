"""The record of `forge study`: the report (reports/study.json) and its findings. Written by the study,
read by its HTML page, the plan and `forge status`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

REPORT_VERSION = 1

Severity = str  # "info" | "warning" | "error"
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


@dataclass
class Finding:
    code: str  # stable identifier, e.g. "placeholders_single"
    severity: Severity  # "info" | "warning" | "error"
    title: str
    detail: str
    fix: str  # what to do, naming forge.yaml keys where one applies
    count: int = 0  # records affected
    examples: list[int] = field(default_factory=list)  # line numbers of affected records


@dataclass
class StudyReport:
    rows: int
    unreadable: dict[str, Any]
    columns: list[dict[str, Any]]
    main_text_column: str | None
    recipe_columns: dict[str, Any]  # the recipe's field -> column (user: maybe a list), when a detection was given
    examples: dict[str, Any] | None
    duplicates: dict[str, Any]
    encoding: dict[str, Any]
    placeholders: dict[str, Any]
    pii: dict[str, Any]
    lengths: dict[str, Any]
    token_counter: str
    max_length: int | None
    truncation: dict[str, Any] | None
    suggested_max_length: dict[str, Any] | None
    records: dict[str, Any]  # empty / short / outliers
    languages: list[dict[str, Any]]
    labels: dict[str, Any]
    label_column: str | None
    findings: list[Finding] = field(default_factory=list)
    sample_note: str | None = None
    shape: dict[str, Any] | None = None  # the detected shape, why, and the alternatives with their scores
    # How the file was read: encoding, spill columns dropped, blank rows skipped (Dataset.reading()).
    reading: dict[str, Any] = field(default_factory=dict)
    # Tokens, words, lines, characters, pages and how tokens were counted (data/token_stats.TextStats).
    text_stats: dict[str, Any] | None = None
    version: int = REPORT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data with stable keys (the `--json` output and reports/study.json)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyReport:
        values = dict(data)
        values["findings"] = [Finding(**f) for f in data.get("findings", [])]
        return cls(**values)

    def by_severity(self, severity: Severity) -> list[Finding]:
        return [f for f in self.findings if f.severity == severity]
