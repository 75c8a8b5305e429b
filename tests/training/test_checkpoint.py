"""Checkpoints: complete or absent, pruned to the newest few, a damaged one skipped for the one before,
and a full disk that leaves the previous checkpoint as it was."""

from __future__ import annotations

import errno
import json

import pytest

from forgellm.errors import ForgeError
from forgellm.project.layout import TRAINER_STATE
from forgellm.project.run_record import list_checkpoints
from forgellm.training import checkpoint as ckpt
from forgellm.training.data import DataPosition
from forgellm.training.protocol import ExitCode

from .conftest import make_run_dir


def write_marker(text: str):
    def write(folder):
        (folder / "weights.txt").write_text(text)

    return write


def test_only_the_newest_checkpoints_are_kept_and_no_temporary_folder_remains(tmp_path):
    for step in (2, 4, 6, 8):
        ckpt.save_checkpoint(tmp_path, step, write_marker(str(step)), {"step": step}, keep=2)
    assert [c.path.name for c in list_checkpoints(tmp_path)] == ["step-6", "step-8"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-6", "step-8"]


def test_half_a_checkpoint_left_by_a_dead_worker_is_never_used_and_is_removed_by_the_next_save(tmp_path):
    ckpt.save_checkpoint(tmp_path, 2, write_marker("good"), {"step": 2}, keep=5)
    half = tmp_path / "checkpoints" / ".tmp-step-4"  # what kill -9 between weights and trainer state leaves
    half.mkdir()
    (half / "weights.txt").write_text("half")
    assert [c.path.name for c in list_checkpoints(tmp_path)] == ["step-2"]
    ckpt.save_checkpoint(tmp_path, 6, write_marker("six"), {"step": 6}, keep=5)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-2", "step-6"]


def test_a_full_disk_leaves_the_previous_checkpoint_and_best_intact(tmp_path):
    ckpt.save_checkpoint(tmp_path, 2, write_marker("good"), {"step": 2}, keep=2)
    ckpt.save_best(tmp_path, write_marker("best-good"))

    def disk_full(folder):
        (folder / "weights.txt").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "weights.txt"))

    with pytest.raises(ForgeError, match="disk is full") as caught:
        ckpt.save_checkpoint(tmp_path, 4, disk_full, {"step": 4}, keep=2)
    assert "previous checkpoint is intact" in caught.value.fix
    with pytest.raises(ForgeError):
        ckpt.save_best(tmp_path, disk_full)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-2"]
    assert (tmp_path / "checkpoints" / "step-2" / "weights.txt").read_text() == "good"
    assert (tmp_path / "best" / "weights.txt").read_text() == "best-good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "checkpoints"]


def test_progress_survives_a_round_trip():
    progress = ckpt.Progress(step=7, position=DataPosition(1, 33), best_val_loss=1.5, best_step=5,
                             train_losses=[2.0, 1.9], val_losses=[(5, 1.5)], seconds=12.5)
    assert ckpt.Progress.from_dict(json.loads(json.dumps(progress.to_dict()))) == progress


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tiny_train_project):
    from forgellm.training.loop import train

    root, prepared = tiny_train_project(max_steps=4, eval_every_steps=2, save_every_steps=2, keep_checkpoints=3)
    run_dir = make_run_dir(root, prepared)
    assert train(run_dir, None, lambda line: None) == ExitCode.OK
    latest = run_dir / "checkpoints" / "step-4"
    (latest / TRAINER_STATE).write_bytes((latest / TRAINER_STATE).read_bytes()[:100])  # torn write

    lines: list[str] = []
    assert train(run_dir, latest, lines.append) == ExitCode.OK
    events = [json.loads(line) for line in lines]
    warnings = [e for e in events if e["event"] == "warning"]
    assert warnings and "step-4 cannot be used" in warnings[0]["message"]
    start = next(e for e in events if e["event"] == "start")
    assert start["step"] == 2 and start["resumed_from"].endswith("step-2")
    assert [e["step"] for e in events if e["event"] == "step"] == [3, 4]


def test_no_usable_checkpoint_is_a_clear_error(tmp_path):
    folder = tmp_path / "checkpoints" / "step-3"
    folder.mkdir(parents=True)
    with pytest.raises(ForgeError, match="No usable checkpoint"):
        ckpt.load_checkpoint(folder, lambda f, s: None, lambda message: None)
