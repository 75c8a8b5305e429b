"""What `forge plan` returns: the plan, the numbers behind it, and everything the user should read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgellm.config.schema import ForgeConfig
from forgellm.hardware.memory import MemoryEstimate
from forgellm.planning.estimate import TimeEstimate
from forgellm.planning.guards import Correction
from forgellm.planning.profile import DataProfile


@dataclass(frozen=True)
class Override:
    """A flag the user gave; it wins over the advisor."""

    key: str  # forge.yaml key, e.g. training.epochs
    value: Any
    advisor_value: Any  # what the advisor proposed (None when it proposed nothing)

    def sentence(self) -> str:
        proposed = "" if self.advisor_value in (None, self.value) else f" (advisor proposed {self.advisor_value})"
        return f"you set {self.key} = {self.value}{proposed}"

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "advisor_value": self.advisor_value}


@dataclass
class PlanResult:
    config: ForgeConfig
    project_dir: Path
    config_path: Path | None  # None for a dry run
    dry_run: bool
    created_project: bool
    advisor: str
    model_key: str
    model_name: str
    model_params: int
    why_model: str
    memory: MemoryEstimate
    memory_budget_bytes: int
    memory_budget_source: str
    time: TimeEstimate | None
    time_budget_minutes: float | None
    profile: DataProfile | None
    corrections: list[Correction] = field(default_factory=list)
    overrides: list[Override] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    advisor_notes: list[str] = field(default_factory=list)
    data_path: Path | None = None
    precision: Any = None  # forgellm.hardware.precision.PrecisionDecision
    distribution: Any = None  # forgellm.planning.distributed.Distribution: several GPUs, else None

    @property
    def next_step(self) -> str:
        if self.data_path is None:
            return "forge prepare FILE"
        return f"forge prepare {self.data_path}"

    def to_dict(self) -> dict[str, Any]:
        training = self.config.training
        return {
            "project_dir": str(self.project_dir),
            "config_path": str(self.config_path) if self.config_path else None,
            "dry_run": self.dry_run,
            "created_project": self.created_project,
            "advisor": self.advisor,
            "model": {
                "key": self.model_key,
                "ref": self.config.model.ref,
                "name": self.model_name,
                "params": self.model_params,
                "why": self.why_model,
                "max_length": self.config.model.max_length,
            },
            "training": training.model_dump(mode="json"),
            "memory": {
                **self.memory.to_dict(),
                "budget_bytes": self.memory_budget_bytes,
                "budget_source": self.memory_budget_source,
            },
            # strategy, gpus, nodes, offload, reason and the per-GPU breakdown (per_gpu) on several GPUs
            "distributed": self.distribution.to_dict() if self.distribution is not None else None,
            "time": self.time.to_dict() if self.time else None,
            "time_budget_minutes": self.time_budget_minutes,
            "precision": self.precision.to_dict() if self.precision is not None else None,
            "data": self.profile.to_dict() if self.profile else None,
            "corrections": [c.to_dict() for c in self.corrections],
            "overrides": [o.to_dict() for o in self.overrides],
            "warnings": list(self.warnings),
            "advisor_notes": list(self.advisor_notes),
            "config": self.config.model_dump(mode="json"),
            "next_step": self.next_step,
        }
