"""The records of a training run (runs/<run-id>/): run.json (`RunSpec`, written by `forge train` when it
creates the run), summary.json (`RunSummary`, written by the supervisor when the run ends), its
checkpoints (one listing, one completeness rule) and `RunRecord`, which reads them together."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from forgellm.project.layout import CHECKPOINT_PREFIX, TRAINER_STATE, ProjectLayout, RunLayout
from forgellm.project.record_io import (
    RECORD_VERSION,
    as_dict,
    as_list,
    as_str,
    known_fields,
    read_object,
    write_object,
)

_CHECKPOINT_NAME = re.compile(rf"^{re.escape(CHECKPOINT_PREFIX)}(\d+)$")


# ------------------------------------------------------------------------------------------------ run.json


@dataclass(frozen=True)
class RunSpec:
    """What the worker needs besides the config: absolute paths, so it can run from any folder."""

    # Defaults only so that `read` can show what a damaged run.json still says; `load` refuses one.
    run_id: str = ""
    project_dir: str = ""
    prepared_dir: str = ""  # data/prepared/<fingerprint>/ with train/val/test .parquet
    model_dir: str = ""  # a Hugging Face folder (from forgellm.models.loading.chat_setup)
    tokenizer_id: str = ""  # manifest's tokenizer id the data was prepared with
    version: int = RECORD_VERSION

    def save(self, run: RunLayout | Path) -> None:
        write_object(_run(run).spec, asdict(self))

    @classmethod
    def load(cls, run: RunLayout | Path) -> RunSpec:
        """The run's spec; ForgeError when run.json is missing or damaged (the run cannot be used)."""
        spec = cls.read(run)
        if spec is None or not all((spec.run_id, spec.project_dir, spec.prepared_dir, spec.model_dir)):
            from forgellm.errors import ErrorCode, ForgeError

            path = _run(run).spec
            raise ForgeError(
                f"{path} is missing or damaged, so run {path.parent.name} cannot be used.",
                fix="Start a new run with `forge train`.",
                code=ErrorCode.RUN_NOT_RESUMABLE,
                data={"run": path.parent.name, "path": str(path)},
            )
        return spec

    @classmethod
    def read(cls, run: RunLayout | Path) -> RunSpec | None:
        """The run's spec; None when run.json is missing or damaged."""
        data = read_object(_run(run).spec)
        if data is None:
            return None
        spec = known_fields(cls, data)
        texts = {name: as_str(getattr(spec, name)) or "" for name in _SPEC_TEXTS}
        return replace(spec, **texts)


_SPEC_TEXTS = ("run_id", "project_dir", "prepared_dir", "model_dir", "tokenizer_id")


def _run(run: RunLayout | Path) -> RunLayout:
    return run if isinstance(run, RunLayout) else RunLayout(Path(run))


# ------------------------------------------------------------------------------------------------ summary.json


@dataclass
class RunSummary:
    """summary.json: what happened in a run (over every attempt and session) and where its results are."""

    run_id: str = ""
    status: str | None = None  # completed | interrupted | failed; "running" for a summary built live
    reason: str | None = None
    message: str | None = None
    steps: int | None = None
    total_steps: int | None = None
    best_val_loss: float | None = None
    best_step: int | None = None
    final_val_loss: float | None = None
    final_train_loss: float | None = None
    tokens_per_s: float | None = None
    peak_memory_bytes: int | None = None
    duration_s: float = 0.0
    attempts: int = 0
    recoveries: list[dict[str, Any]] = field(default_factory=list)
    config_changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    paths: dict[str, str | None] = field(default_factory=dict)  # run_dir, best, last_checkpoint, config, ...
    version: int = RECORD_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSummary:
        summary = known_fields(cls, data)
        summary.status = as_str(summary.status)
        summary.recoveries = [r for r in as_list(summary.recoveries) if isinstance(r, dict)]
        summary.config_changes = as_dict(summary.config_changes)
        summary.paths = as_dict(summary.paths)
        return summary

    def save(self, run: RunLayout | Path) -> None:
        write_object(_run(run).summary, self.to_dict())

    @classmethod
    def load(cls, run: RunLayout | Path) -> RunSummary | None:
        """None when summary.json is missing (a run still going, or killed) or damaged."""
        data = read_object(_run(run).summary)
        return cls.from_dict(data) if data is not None else None


# ------------------------------------------------------------------------------------------------ checkpoints


class Checkpoint(NamedTuple):
    step: int
    path: Path


def list_checkpoints(run: RunLayout | Path) -> list[Checkpoint]:
    """Complete checkpoints of a run, oldest first: the one listing training, status, eval and export use.

    The worker writes a checkpoint under a temporary name and renames it when done, and its trainer state
    is the last file written: a step-<N> folder without it was never finished (or was damaged by hand)."""
    folder = _run(run).checkpoints
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _CHECKPOINT_NAME.match(path.name)
        if match and path.is_dir() and (path / TRAINER_STATE).is_file():
            found.append(Checkpoint(int(match.group(1)), path))
    return sorted(found, key=lambda checkpoint: checkpoint.step)


def checkpoint_step(path: Path) -> int | None:
    """The step of a checkpoint folder from its name (step-<N>); None for any other folder."""
    match = _CHECKPOINT_NAME.match(path.name)
    return int(match.group(1)) if match else None


def latest_checkpoint(run: RunLayout | Path) -> Path | None:
    found = list_checkpoints(run)
    return found[-1].path if found else None


# ------------------------------------------------------------------------------------------------ the run


@dataclass
class RunRecord:
    """A run folder read as one record: spec, summary, checkpoints, best weights and config snapshot."""

    layout: RunLayout
    spec: RunSpec | None  # None: run.json missing or damaged
    summary: RunSummary | None  # None: the run has not ended (or was killed), or summary.json is damaged
    checkpoints: list[Checkpoint]

    @property
    def run_id(self) -> str:
        return self.layout.run_id

    @property
    def status(self) -> str | None:
        """completed, interrupted or failed as summary.json records it; None while none was written."""
        return self.summary.status if self.summary else None

    @property
    def best(self) -> Path | None:
        """best/ when it holds weights (the worker replaces it atomically)."""
        best = self.layout.best
        return best if best.is_dir() and any(best.iterdir()) else None

    @property
    def last_checkpoint(self) -> Checkpoint | None:
        return self.checkpoints[-1] if self.checkpoints else None

    @property
    def config_path(self) -> Path:
        """The config snapshot the run trains with (healing rewrites it between attempts)."""
        return self.layout.config

    def load_config(self) -> Any:
        from forgellm.config.io import load_config

        return load_config(self.layout.config, environ={}).config

    @classmethod
    def load(cls, run: RunLayout | Path) -> RunRecord:
        """Never fails: what is missing or damaged reads as None (see each field)."""
        layout = _run(run)
        return cls(layout, RunSpec.read(layout), RunSummary.load(layout), list_checkpoints(layout))


def run_status(run: RunLayout | Path) -> str | None:
    """The status summary.json records (completed, interrupted, failed); None while none was written."""
    summary = RunSummary.load(run)
    return summary.status if summary else None


def run_folders(project: ProjectLayout) -> list[RunLayout]:
    """Folders under runs/ that hold a run.json, in no particular order."""
    if not project.runs_dir.is_dir():
        return []
    return [RunLayout(p) for p in project.runs_dir.iterdir() if RunLayout(p).spec.is_file()]
