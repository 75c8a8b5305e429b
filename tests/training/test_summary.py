"""summary.json and loss.png from metrics.jsonl, over attempts and resumed sessions."""

from __future__ import annotations

import json

from forgellm.project.layout import METRICS, SUMMARY, TRAINER_STATE
from forgellm.training.summary import build_summary, by_step, write_summary


def _write_metrics(run_dir, records, *, cut_last_line=False):
    text = "".join(json.dumps(r) + "\n" for r in records)
    if cut_last_line:
        text += '{"event": "step", "step": 99, "lo'  # kill -9 in the middle of a write
    (run_dir / METRICS).write_text(text)


def _step(step, loss, attempt, time, speed=100.0, memory=1000):
    return {
        "event": "step",
        "step": step,
        "loss": loss,
        "lr": 1e-3,
        "tokens_per_s": speed,
        "memory_bytes": memory,
        "attempt": attempt,
        "time": time,
    }


def _two_attempts():
    """Attempt 1 trains to step 4 (checkpoint at 2) and runs out of memory; attempt 2 redoes 3-4 and ends."""
    return [
        {"event": "start", "step": 0, "total_steps": 6, "attempt": 1, "time": 100.0},
        _step(1, 3.0, 1, 101.0),
        _step(2, 2.8, 1, 102.0, memory=5000),
        {"event": "eval", "step": 2, "val_loss": 2.9, "best_val_loss": 2.9, "attempt": 1, "time": 102.5},
        _step(3, 2.7, 1, 103.0),
        _step(4, 9.9, 1, 104.0),
        {"event": "error", "kind": "oom", "message": "Out of memory", "step": 5, "attempt": 1, "time": 105.0},
        {
            "event": "recovery",
            "kind": "oom",
            "attempt": 1,
            "next_attempt": 2,
            "step": 5,
            "explanation": "smaller micro-batches",
            "changes": {
                "training.micro_batch_size": {"from": 4, "to": 2},
                "training.gradient_accumulation": {"from": 1, "to": 2},
            },
            "resume_from": "x",
            "time": 105.5,
        },
        # the user stopped and resumed an hour later: the pause is no training time
        {"event": "start", "step": 2, "total_steps": 6, "attempt": 2, "time": 4000.0},
        _step(3, 2.6, 2, 4001.0, speed=50.0),
        _step(4, 2.5, 2, 4002.0, speed=60.0),
        {"event": "eval", "step": 4, "val_loss": 2.4, "best_val_loss": 2.4, "attempt": 2, "time": 4002.5},
        _step(5, 2.3, 2, 4003.0, speed=70.0),
        _step(6, 2.2, 2, 4004.0, speed=80.0),
        {"event": "eval", "step": 6, "val_loss": 2.45, "best_val_loss": 2.4, "attempt": 2, "time": 4004.5},
        {
            "event": "end",
            "step": 6,
            "reason": "max_steps",
            "best_val_loss": 2.4,
            "best_step": 4,
            "final_train_loss": 2.25,
            "attempt": 2,
            "time": 4005.0,
        },
    ]


def test_later_attempts_replace_the_steps_they_redo():
    steps = by_step(_two_attempts(), "step")
    assert list(steps) == [1, 2, 3, 4, 5, 6]
    assert steps[4]["loss"] == 2.5  # attempt 2's value, not the 9.9 before the failure


def test_summary_of_a_healed_run(tmp_path):
    _write_metrics(tmp_path, _two_attempts(), cut_last_line=True)
    checkpoint = tmp_path / "checkpoints" / "step-6"
    checkpoint.mkdir(parents=True)
    (checkpoint / TRAINER_STATE).write_bytes(b"x")
    (tmp_path / "best").mkdir()
    summary = build_summary(tmp_path, "completed", "max_steps")
    assert (summary.steps, summary.total_steps) == (6, 6)
    assert (summary.best_val_loss, summary.best_step, summary.final_val_loss) == (2.4, 4, 2.45)
    assert summary.final_train_loss == 2.25
    assert summary.peak_memory_bytes == 5000
    assert summary.tokens_per_s == 75.0  # median of the kept steps: 100, 100, 50, 60, 70, 80
    assert summary.duration_s == 10.5  # 5.5 + 5 s of attempts; the hour between sessions is not counted
    assert summary.attempts == 2
    assert summary.config_changes == {
        "training.micro_batch_size": {"from": 4, "to": 2},
        "training.gradient_accumulation": {"from": 1, "to": 2},
    }
    assert summary.recoveries[0]["kind"] == "oom" and summary.recoveries[0]["step"] == 5
    assert summary.paths["best"] == str(tmp_path / "best")
    assert summary.paths["last_checkpoint"] == str(checkpoint)


def test_an_interrupted_run_reports_where_it_stopped(tmp_path):
    records = _two_attempts()[:6]
    _write_metrics(tmp_path, records)
    summary = build_summary(tmp_path, "interrupted", "interrupted")
    assert summary.steps == 4 and summary.final_train_loss == 9.9
    assert summary.best_val_loss == 2.9 and summary.paths["last_checkpoint"] is None


def test_write_summary_draws_the_loss_plot(tmp_path):
    _write_metrics(tmp_path, _two_attempts())
    summary = write_summary(tmp_path, "completed", "max_steps")
    plot = tmp_path / "loss.png"
    assert summary.paths["loss_plot"] == str(plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000
    assert json.loads((tmp_path / SUMMARY).read_text())["status"] == "completed"


def test_a_run_without_metrics_has_no_plot(tmp_path):
    summary = write_summary(tmp_path, "failed", "config", "bad settings")
    assert summary.paths["loss_plot"] is None and summary.steps is None
    assert summary.message == "bad settings"
