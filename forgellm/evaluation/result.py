"""What `forge eval` returns (EvalResult, whose record is reports/eval.json) and the callbacks it reports
progress through: shared by the evaluation run, its reports and the CLI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgellm.evaluation.judge import JudgeOutcome
from forgellm.evaluation.samples import SampleResult

if TYPE_CHECKING:
    from forgellm.project.eval_record import EvalRecord


@dataclass
class EvalProgress:
    """Callbacks the CLI renders: a line per stage, and counts inside the stage (examples or answers)."""

    stage: Callable[[str], None] = lambda _message: None
    advance: Callable[[str, int, int], None] = lambda _unit, _done, _total: None


@dataclass
class EvalResult:
    run_id: str
    checkpoint: str
    base_model: str
    summary: dict[str, Any]
    settings: dict[str, Any]
    examples: list[SampleResult]
    example_losses: list[dict[str, Any]]  # line, tokens, base, tuned: per scored test example
    judge: JudgeOutcome | None
    warnings: list[str]
    notes: list[str]
    seconds: dict[str, float]
    files: dict[str, Path]
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_record(self) -> EvalRecord:
        """What reports/eval.json holds."""
        from forgellm.project.eval_record import EvalRecord

        return EvalRecord(
            run_id=self.run_id,
            checkpoint=self.checkpoint,
            base_model=self.base_model,
            created_at=self.created_at,
            summary=self.summary,
            settings=self.settings,
            examples=[result.to_dict() for result in self.examples],
            example_losses=self.example_losses,
            judge=self.judge.to_dict() if self.judge is not None else None,
            warnings=self.warnings,
            notes=self.notes,
            seconds={k: round(v, 2) for k, v in self.seconds.items()},
            files={k: str(v) for k, v in self.files.items()},
        )

    def to_dict(self) -> dict[str, Any]:
        return self.to_record().to_dict()
