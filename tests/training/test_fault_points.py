"""Faults injected where the real failures happen (FORGE_FAULT KIND:POINT@STEP): in the forward and the
backward pass, inside optimizer.step, during evaluation and in the middle of writing a checkpoint; and
the supervisor's recovery from each, against an uninterrupted run of the same settings.

The contract (forgellm/training/loop.py, data.py, healing.py):
- a crash, kill or hang changes nothing: the next attempt resumes from the last complete checkpoint
  (weights, optimizer, scheduler, RNG, data position), so the final weights and every step's loss are
  bit for bit those of a run that never failed;
- an OOM halves the micro-batch and doubles gradient accumulation (the effective batch stays), and the
  loss of a step is the mean over all its target tokens, so the updates are the same sums in another
  order: the final weights equal the uninterrupted run's up to float rounding, not bit for bit;
- a NaN halves the learning rate, so the weights differ by design (test_supervisor.py covers it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stage_support import staged

from forgellm.config.io import load_config
from forgellm.project.layout import TRAINER_STATE
from forgellm.project.run_record import list_checkpoints
from forgellm.training.protocol import ExitCode
from forgellm.training.summary import read_metrics
from forgellm.training.supervisor import run_training
from forgellm.training.worker import InjectedFaults, parse_faults

from .conftest import make_run_dir

DRILL = {"max_steps": 8, "save_every_steps": 2, "eval_every_steps": 2, "keep_checkpoints": 10, "max_recoveries": 6}


def _records(run_dir: Path, kind: str) -> list[dict]:
    return [r for r in read_metrics(run_dir) if r.get("event") == kind]


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _final_adapter(run_dir: Path) -> dict:
    return _adapter(run_dir / "checkpoints" / "step-8")


def _losses(run_dir: Path) -> dict[int, float]:
    """Each step's loss as the attempt that kept it reported it (a later attempt redoes lost steps)."""
    return {r["step"]: r["loss"] for r in _records(run_dir, "step")}


def test_fault_specs_name_a_kind_a_point_and_a_step():
    assert parse_faults("oom@3, crash@4, nan@5") == {("oom", "forward", 3), ("crash", "step", 4), ("nan", "forward", 5)}
    assert parse_faults("oom:backward@3,crash:checkpoint@4,hang:eval@2") == {
        ("oom", "backward", 3), ("crash", "checkpoint", 4), ("hang", "eval", 2),
    }
    for bad in ("oom:nowhere@3", "nan:checkpoint@2", "oom:backward", "melt:step@1"):
        with pytest.raises(ValueError, match="KIND\\[:POINT\\]@STEP"):
            parse_faults(bad)


def test_a_fault_fires_once_per_run_folder_whatever_the_spelling(tmp_path):
    (tmp_path / ".faults-fired").write_text("oom@3\ncrash:checkpoint@4\n")  # an older worker's record included
    faults = InjectedFaults("oom:forward@3,crash:checkpoint@4,kill:optimizer@5", tmp_path)
    assert faults.planned == {("kill", "optimizer", 5)}


# Each OOM or NaN point, in-process (an exception, no process to end): the attempt fails at that point
# with the worker's classification, and nothing of the failed step is kept.
@pytest.mark.parametrize(
    ("fault", "exit_code", "where"),
    [
        ("oom:forward@2", ExitCode.OOM, "in the forward pass of step 2"),
        ("oom:backward@2", ExitCode.OOM, "in the backward pass of step 2"),
        ("oom:optimizer@2", ExitCode.OOM, "in the optimizer step of step 2"),
        ("oom:eval@2", ExitCode.OOM, "in the evaluation after step 2"),
        ("oom:checkpoint@2", ExitCode.OOM, "while saving the checkpoint of step 2"),
        ("nan:forward@2", ExitCode.NAN, "The loss of step 2 is nan"),
        ("nan:backward@2", ExitCode.NAN, "The gradient norm of step 2 is nan"),
    ],
)
def test_each_point_fails_where_the_real_failure_would(tiny_train_project, fault, exit_code, where):
    from forgellm.training.loop import train

    root, prepared = tiny_train_project(max_steps=3, save_every_steps=1, eval_every_steps=2, keep_checkpoints=5)
    run_dir = make_run_dir(root, prepared)
    lines: list[str] = []
    assert train(run_dir, None, lines.append, faults=InjectedFaults(fault, run_dir)) == exit_code
    events = [json.loads(line) for line in lines]
    (error,) = [e for e in events if e["event"] == "error"]
    assert where in error["message"]
    trace = error["traceback"] or ""
    if fault.startswith("oom:backward"):  # raised by a gradient hook while autograd runs
        assert "backward" in trace and "optimizer_step" in trace
    if fault.startswith("oom:optimizer"):
        assert "_apply_gradients" in trace and "step" in trace
    steps = [e["step"] for e in events if e["event"] == "step"]
    # A failure in step 2's evaluation or checkpoint comes after the step; anywhere else step 2 is lost.
    assert steps == ([1, 2] if ":eval" in fault or ":checkpoint" in fault else [1])
    assert [c.step for c in list_checkpoints(run_dir)] == [1]  # no step-2 checkpoint, whole or half
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))
    assert (run_dir / "checkpoints" / "step-1" / TRAINER_STATE).is_file()


def test_crash_kill_and_hang_at_every_point_resume_to_the_same_weights_and_losses(tiny_train_project, monkeypatch):
    """Four attempts: a crash while writing the step-4 checkpoint, a SIGKILL inside optimizer.step, a worker
    hung inside backward (killed by the watchdog). The contract: nothing changes, so the final adapter
    and each step's loss equal an uninterrupted run's exactly."""
    root, _ = tiny_train_project(**DRILL)
    straight = run_training(*staged(root))
    monkeypatch.setenv("FORGE_FAULT", "crash:checkpoint@4,kill:optimizer@5,hang:backward@7")
    monkeypatch.setenv("FORGE_WATCHDOG_SECONDS", "6")
    result = run_training(*staged(root))
    assert result.status == "completed" and result.summary.steps == 8
    recoveries = _records(result.run_dir, "recovery")
    assert [(r["kind"], r["changes"], Path(r["resume_from"]).name) for r in recoveries] == [
        ("crash", {}, "step-2"),  # step-4 was half written: its weights, not its trainer state
        ("killed", {}, "step-4"),
        ("hung", {}, "step-6"),
    ]
    assert not list((result.run_dir / "checkpoints").glob(".tmp-*"))  # the half checkpoint was cleared
    hung = recoveries[-1]["explanation"]
    assert "stopped responding for" in hung and "restarted from step 6" in hung
    assert "no heartbeat for" in (result.run_dir / "logs" / "worker-3.log").read_text()
    assert [s["step"] for s in _records(result.run_dir, "start")] == [0, 2, 4, 6]
    starts = _records(result.run_dir, "start")
    assert {(s["micro_batch_size"], s["gradient_accumulation"]) for s in starts} == {(4, 1)}
    assert _losses(result.run_dir) == _losses(straight.run_dir)
    want, got = _final_adapter(straight.run_dir), _final_adapter(result.run_dir)
    assert want.keys() == got.keys() and all(want[n].equal(got[n]) for n in want)


def test_out_of_memory_at_every_point_keeps_the_effective_batch_and_the_weights(tiny_train_project, monkeypatch):
    """OOM in backward, in optimizer.step, in an evaluation: each halves the micro-batch and doubles the
    accumulation (8x1 -> 4x2 with gradient checkpointing -> 2x4 -> 1x8). Same examples per update, the
    loss averaged over the step's tokens: the weights match the uninterrupted run's to float rounding."""
    root, _ = tiny_train_project(**{**DRILL, "micro_batch_size": 8})
    straight = run_training(*staged(root))
    monkeypatch.setenv("FORGE_FAULT", "oom:backward@3,oom:optimizer@5,oom:eval@6")
    result = run_training(*staged(root))
    assert result.status == "completed" and result.summary.steps == 8
    recoveries = _records(result.run_dir, "recovery")
    # An evaluation's failure is reported at the step in progress: step 6 is done, 7 was next.
    assert [(r["kind"], r["step"], Path(r["resume_from"]).name) for r in recoveries] == [
        ("oom", 3, "step-2"), ("oom", 5, "step-4"), ("oom", 7, "step-4"),
    ]
    assert recoveries[0]["changes"] == {
        "training.micro_batch_size": {"from": 8, "to": 4}, "training.gradient_accumulation": {"from": 1, "to": 2},
        "training.gradient_checkpointing": {"from": False, "to": True},
    }
    assert [r["changes"]["training.micro_batch_size"]["to"] for r in recoveries] == [4, 2, 1]
    starts = _records(result.run_dir, "start")
    assert [(s["micro_batch_size"], s["gradient_accumulation"]) for s in starts] == [(8, 1), (4, 2), (2, 4), (1, 8)]
    final = load_config(result.run_dir / "config.yaml").config.training
    assert (final.micro_batch_size, final.gradient_accumulation, final.gradient_checkpointing) == (1, 8, True)
    want, got = _losses(straight.run_dir), _losses(result.run_dir)
    assert want.keys() == got.keys() and all(abs(want[s] - got[s]) < 1e-5 for s in want)  # measured 5e-7
    want, got = _final_adapter(straight.run_dir), _final_adapter(result.run_dir)
    assert want.keys() == got.keys()
    for name in want:
        assert (want[name] - got[name]).abs().max() < 1e-6, name  # measured 1.5e-8 (weights ~0.13)
