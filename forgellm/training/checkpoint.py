"""Checkpoints that survive kill -9 and full disks.

A checkpoint is written into a temporary folder, every file fsynced, then renamed to
``checkpoints/step-<N>/``: a folder with the final name is always complete. Loading falls back to
the previous checkpoint when the newest cannot be read (a damaged disk, a hand-edited folder).
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from forgellm.errors import ErrorCode, ForgeError, cause
from forgellm.hardware.disk import is_disk_full
from forgellm.project.layout import TRAINER_STATE, RunLayout
from forgellm.project.run_record import checkpoint_step, list_checkpoints
from forgellm.training.data import DataPosition


@dataclass
class Progress:
    """The loop's own state that a checkpoint restores (besides weights, optimizer, scheduler, RNG)."""

    step: int = 0
    position: DataPosition = field(default_factory=DataPosition)
    best_val_loss: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    train_losses: list[float] = field(default_factory=list)  # one per optimizer step
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0  # training time of all attempts so far (for time_budget_minutes)
    overfitting_warned: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["position"] = self.position.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Progress:
        data = dict(data)
        data["position"] = DataPosition.from_dict(data["position"])
        data["val_losses"] = [tuple(v) for v in data.get("val_losses", [])]
        return cls(**data)


def capture_rng() -> dict[str, Any]:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path, step: int, write_weights: Callable[[Path], None], trainer_state: dict[str, Any], keep: int
) -> Path:
    """Write ``checkpoints/step-<step>/`` atomically, then drop all but the ``keep`` newest."""
    final = RunLayout(run_dir).checkpoint(step)
    # Half a checkpoint left by a worker that died mid-save (kill -9, a crash): never listed, never
    # resumed from, but as large as the weights. One worker writes a run at a time (the project lock).
    for stale in final.parent.glob(".tmp-*") if final.parent.is_dir() else ():
        shutil.rmtree(stale, ignore_errors=True)
    _atomic_folder(final, lambda tmp: _write_checkpoint(tmp, write_weights, trainer_state))
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)
    return final


def save_best(run_dir: Path, write_weights: Callable[[Path], None]) -> Path:
    """Replace ``best/`` atomically: the old best stays until the new one is complete."""
    final = RunLayout(run_dir).best
    _atomic_folder(final, write_weights)
    return final


def _write_checkpoint(folder: Path, write_weights: Callable[[Path], None], trainer_state: dict[str, Any]) -> None:
    import torch

    write_weights(folder)
    torch.save(trainer_state, folder / TRAINER_STATE)


def _atomic_folder(final: Path, fill: Callable[[Path], None]) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{final.name}")
    old = final.with_name(f".old-{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        fill(tmp)
        _fsync_tree(tmp)
        if final.exists():  # a rename cannot replace a non-empty folder: move the old one aside first
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        tmp.rename(final)
        _fsync_dir(final.parent)
        shutil.rmtree(old, ignore_errors=True)
    except Exception as exc:  # any failure (safetensors raises its own error type) leaves no temp folder
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():
            old.rename(final)
        if is_disk_full(exc):  # safetensors words OS errors: "... (os error 28)"
            raise ForgeError(
                f"The disk is full while saving {final.name} of the run "
                f"({getattr(exc, 'filename', None) or final.parent}).",
                fix="Free some space and run `forge train --resume`: the previous checkpoint is intact.",
                code=ErrorCode.DISK_FULL,
                data={"path": str(getattr(exc, "filename", None) or final.parent), "cause": cause(exc)},
            ) from None
        raise


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def load_checkpoint(wanted: Path, restore: Callable[[Path, dict[str, Any]], None], warn: Callable[[str], None]) -> Path:
    """Restore ``wanted``; when it cannot be read, the newest older checkpoint of the same run.

    ``restore(folder, trainer_state)`` puts weights and state back; any error it raises marks the
    checkpoint unusable. Returns the checkpoint actually used.
    """
    import torch

    run = RunLayout(wanted.parent.parent)
    step = checkpoint_step(wanted)
    older = list_checkpoints(run) if wanted.parent == run.checkpoints and step is not None else []
    candidates = [wanted] + [c.path for c in reversed(older) if c.step < step]  # type: ignore[operator]
    for folder in candidates:
        try:
            state = torch.load(folder / TRAINER_STATE, map_location="cpu", weights_only=False)
            restore(folder, state)
            return folder
        except Exception as exc:  # a damaged checkpoint fails in many ways (pickle, safetensors, shapes)
            warn(f"Checkpoint {folder.name} cannot be used ({type(exc).__name__}: {exc}); trying an older one.")
    raise ForgeError(
        f"No usable checkpoint at or before {wanted}.",
        fix="Start the run again without --resume.",
        code=ErrorCode.CHECKPOINT_MISSING,
    )
