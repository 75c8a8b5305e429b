"""The record of an evaluation: reports/eval.json (`EvalRecord`), written once by `forge eval` and read
by `forge status`, the model card of `forge export` and `forge ignite`'s closing sample."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from forgellm.project.layout import ProjectLayout
from forgellm.project.record_io import (
    RECORD_VERSION,
    as_dict,
    as_list,
    as_number,
    as_str,
    known_fields,
    read_object,
    write_object,
)

SIDES = ("base", "tuned")


@dataclass
class EvalRecord:
    """eval.json: base vs fine-tuned figures of one run (`summary`), the settings, and every sample."""

    run_id: str | None = None
    checkpoint: str | None = None
    base_model: str | None = None
    created_at: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # base/tuned figures, loss_change, verdict, ...
    settings: dict[str, Any] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)  # side-by-side answers
    example_losses: list[dict[str, Any]] = field(default_factory=list)
    judge: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    version: int = RECORD_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalRecord:
        record = known_fields(cls, data)
        record.run_id = as_str(record.run_id)
        record.summary = as_dict(record.summary)
        record.settings = as_dict(record.settings)
        record.examples = [e for e in as_list(record.examples) if isinstance(e, dict)]
        record.example_losses = [e for e in as_list(record.example_losses) if isinstance(e, dict)]
        record.judge = record.judge if isinstance(record.judge, dict) else None
        return record

    def save(self, path: ProjectLayout | Path) -> None:
        """Atomically; `path` is the project (its reports/eval.json) or the file itself."""
        write_object(_path(path), self.to_dict(), allow_nan=False)  # browsers' JSON.parse refuses NaN

    @classmethod
    def load(cls, path: ProjectLayout | Path) -> EvalRecord | None:
        """None when eval.json is missing or damaged."""
        data = read_object(_path(path))
        return cls.from_dict(data) if data is not None else None

    def figures(self, side: str, known: tuple[str, ...] = ()) -> dict[str, float | int | None]:
        """One side's numbers (base or tuned): each of `known` (None when absent), then any other number."""
        figures = as_dict(self.summary.get(side))
        values = {key: as_number(figures.get(key)) for key in known}
        values |= {k: v for k, v in figures.items() if k not in values and as_number(v) is not None}
        return values

    def summary_of(self, run_id: str) -> dict[str, Any]:
        """The summary when this report evaluated `run_id`; {} for another run's report."""
        return self.summary if self.run_id == run_id else {}


def _path(path: ProjectLayout | Path) -> Path:
    return path.eval_json if isinstance(path, ProjectLayout) else Path(path)
