"""The worker as the supervisor runs it: a subprocess whose stdout holds protocol events only, whose exit
code classifies the outcome, and whose injected faults are the real failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from forgellm.project.layout import FAULTS_FIRED
from forgellm.training.protocol import FAULT_ENV, ExitCode, parse_event

from .conftest import make_run_dir


def run_worker(run_dir: Path, *, fault: str | None = None, resume: Path | None = None, timeout: float = 240):
    """(exit code, events, stdout lines that were not events, stderr)."""
    env = dict(os.environ)
    env.pop(FAULT_ENV, None)
    env["OMP_NUM_THREADS"] = "1"  # as the in-process tests (conftest): extra threads only contend here
    if fault:
        env[FAULT_ENV] = fault
    command = [sys.executable, "-m", "forgellm.training.worker", str(run_dir)]
    if resume:
        command += ["--resume", str(resume)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    events = [parse_event(line) for line in lines]
    stray = [line for line, e in zip(lines, events, strict=True) if e is None]
    return done.returncode, [e for e in events if e], stray, done.stderr


def adapter_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def latest_checkpoint(run_dir: Path) -> Path:
    return max((run_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def test_every_injected_fault_fails_for_real_and_the_resumed_run_ends_like_an_uninterrupted_one(
    tiny_train_project,
):
    """One run, four faults: each attempt dies of the next one, the next attempt resumes from the latest
    checkpoint as the supervisor does, and the end result equals a run that never failed."""
    from forgellm.training.loop import train

    root, prepared = tiny_train_project(max_steps=6, eval_every_steps=2, save_every_steps=1, keep_checkpoints=10)
    straight = make_run_dir(root, prepared, "straight")
    assert train(straight, None, lambda line: None) == ExitCode.OK

    run_dir = make_run_dir(root, prepared, "drill")
    faults = "oom@2,nan@3,crash@4,kill@5"
    expected = [  # (exit code, error kind or None for an abrupt death, last completed step)
        (ExitCode.OOM, "oom", 1),
        (ExitCode.NAN, "nan", 2),
        (1, None, 3),  # crash: os._exit(1), no last words
        (-signal.SIGKILL, None, 4),
    ]
    resume = None
    for attempt, (code, kind, last_step) in enumerate(expected, start=1):
        exit_code, events, stray, stderr = run_worker(run_dir, fault=faults, resume=resume)
        assert exit_code == code, f"attempt {attempt}: {stderr[-2000:]}"
        assert stray == []  # library output went to stderr
        assert [e["step"] for e in events if e["event"] == "step"][-1] == last_step
        errors = [e for e in events if e["event"] == "error"]
        if kind is None:
            assert errors == []
        else:
            assert [(e["kind"], e["step"]) for e in errors] == [(kind, last_step + 1)]
            codes = {"oom": "train-out-of-memory", "nan": "train-non-finite"}
            assert errors[0]["code"] == codes[kind] and "fix" in errors[0] and isinstance(errors[0]["data"], dict)
        assert not (run_dir / "checkpoints" / f"step-{last_step + 1}").exists()  # nothing after the failure
        assert len((run_dir / FAULTS_FIRED).read_text().split()) == attempt  # each fault fires once
        resume = latest_checkpoint(run_dir)
        assert resume.name == f"step-{last_step}"

    exit_code, events, stray, stderr = run_worker(run_dir, fault=faults, resume=resume)
    assert exit_code == ExitCode.OK, stderr[-2000:]
    assert stray == [] and events[0]["event"] == "start" and events[0]["resumed_from"].endswith("step-4")
    assert events[-1]["event"] == "end" and events[-1]["reason"] == "max_steps"
    assert (run_dir / "best" / "adapter_model.safetensors").is_file()
    want = adapter_tensors(straight / "checkpoints" / "step-6")
    got = adapter_tensors(run_dir / "checkpoints" / "step-6")
    assert want.keys() == got.keys()
    for name, tensor in want.items():
        assert (tensor - got[name]).abs().max() < 1e-5, name
    initial = adapter_tensors(run_dir / "checkpoints" / "step-4")
    assert any((initial[n] - got[n]).abs().max() > 1e-4 for n in got)  # it did train after the last resume


def test_sigterm_saves_a_checkpoint_and_exits_130(tiny_train_project):
    root, prepared = tiny_train_project(max_steps=500, eval_every_steps=100, save_every_steps=100)
    run_dir = make_run_dir(root, prepared)
    process = subprocess.Popen(
        [sys.executable, "-m", "forgellm.training.worker", str(run_dir)], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    events = []
    for line in process.stdout:
        events.append(parse_event(line))
        if events[-1] and events[-1]["event"] == "step" and events[-1]["step"] == 2:
            process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == ExitCode.INTERRUPTED
    saved = [e for e in events if e and e["event"] == "checkpoint"]
    assert saved and saved[-1]["reason"] == "signal"
    assert events[-1]["event"] == "end" and events[-1]["reason"] == "interrupted"
    assert Path(saved[-1]["path"]).is_dir() and saved[-1]["step"] < 10


def test_a_malformed_fault_spec_is_refused():
    from forgellm.training.worker import parse_faults

    assert parse_faults("oom@3, kill@5") == {("oom", "forward", 3), ("kill", "step", 5)}
    with pytest.raises(ValueError):
        parse_faults("explode@3")
