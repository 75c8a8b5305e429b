"""training.report_to: the run's events reach the tracking library; a missing library is a clear error."""

from __future__ import annotations

import sys

import pytest
from stage_support import staged

from forgellm.errors import ForgeError
from forgellm.training.tracking import metrics_of, open_tracker


def test_step_and_eval_events_become_named_metrics():
    step = {"event": "step", "step": 3, "loss": 2.5, "lr": 1e-3, "grad_norm": 0.7, "tokens_per_s": 900, "epoch": 0.2}
    assert metrics_of(step) == {
        "train/loss": 2.5, "train/lr": 1e-3, "train/grad_norm": 0.7, "train/tokens_per_s": 900.0,
    }  # fmt: skip
    assert metrics_of({"event": "eval", "step": 5, "val_loss": 1.9, "best_val_loss": 1.9}) == {
        "eval/loss": 1.9, "eval/best_loss": 1.9,
    }  # fmt: skip
    assert metrics_of({"event": "checkpoint", "step": 5, "path": "x"}) == {}


def test_a_missing_tracking_library_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed: importing it fails
    with pytest.raises(ForgeError) as caught:
        open_tracker("mlflow", tmp_path, "run-1", "bot", {})
    assert "pip install mlflow" in caught.value.fix


def test_tensorboard_receives_the_training_curve(tiny_train_project):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from forgellm.training.supervisor import run_training

    root, _ = tiny_train_project(max_steps=6, eval_every_steps=3, save_every_steps=3, report_to="tensorboard")
    result = run_training(*staged(root))
    logs = result.run_dir / "tensorboard"
    events = EventAccumulator(str(logs))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events.Scalars("eval/loss")] == [3, 6]
    metrics = [line for line in (result.run_dir / "metrics.jsonl").read_text().splitlines() if '"step"' in line]
    assert metrics  # the same run also kept its own metrics.jsonl
