"""The supervisor around the REAL worker: runs, the project lock, and self-healing from faults injected
with FORGE_FAULT (a real OutOfMemoryError, a real NaN loss, a real exit or SIGKILL of the worker)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from stage_support import staged

from forgellm.config.io import load_config, save_config
from forgellm.config.schema import ForgeConfig
from forgellm.errors import ForgeError
from forgellm.project.layout import TRAINER_STATE
from forgellm.project.lock import ProjectLock
from forgellm.project.run_record import RunSummary, latest_checkpoint, list_checkpoints
from forgellm.status import project_status
from forgellm.training.runs import list_runs, new_run_id
from forgellm.training.summary import read_metrics
from forgellm.training.supervisor import run_training

FAST = {"max_steps": 8, "save_every_steps": 2, "eval_every_steps": 4}


def _records(run_dir: Path, kind: str) -> list[dict]:
    return [r for r in read_metrics(run_dir) if r.get("event") == kind]


# ------------------------------------------------------------------------------------------------ runs, lock


def test_run_ids_sort_by_start_time_and_never_collide(tmp_path):
    config = ForgeConfig.model_validate({"model": {"ref": "/models/Qwen2.5-0.5B-Instruct/"}})
    first = new_run_id(config, tmp_path, datetime(2026, 11, 22, 22, 43, 5))
    assert first == "20261122-224305-lora-qwen2.5-0.5b-instruct"
    (tmp_path / first).mkdir()
    assert new_run_id(config, tmp_path, datetime(2026, 11, 22, 22, 43, 5)) == first + "-2"
    assert new_run_id(config, tmp_path, datetime(2026, 11, 23, 1, 0, 0)) > first


def test_only_complete_checkpoints_count(tmp_path):
    for name, complete in (("step-2", True), ("step-10", True), ("step-12", False), (".tmp-step-14", True)):
        folder = tmp_path / "checkpoints" / name
        folder.mkdir(parents=True)
        if complete:
            (folder / TRAINER_STATE).write_bytes(b"state")
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2, 10]  # numeric order, not text order
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-10"


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from forgellm.project.lock import ProjectLock
lock = ProjectLock(Path(sys.argv[1]), "train")
lock.acquire("20261122-224305-lora-held")
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_training_is_refused_with_the_running_run_and_pid(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ForgeError) as caught:
            ProjectLock(tmp_path, "train").acquire("mine")
        assert "20261122-224305-lora-held" in caught.value.message and str(holder.pid) in caught.value.message
        assert "--resume" in caught.value.fix
    finally:
        holder.kill()
        holder.wait()
    lock = ProjectLock(tmp_path, "train")  # its holder died (kill -9): the stale lock is taken over
    lock.acquire("mine")
    assert lock.holder()["run_id"] == "mine" and lock.holder()["pid"] == os.getpid()
    lock.release()


def test_training_needs_a_plan_and_prepared_data(tmp_path):
    with pytest.raises(ForgeError, match="(?i)no forge.yaml"):  # the caller's one read of it
        run_training(*staged(tmp_path))
    save_config(ForgeConfig.model_validate({"data": {"source": "tickets.csv"}}), tmp_path / "forge.yaml")
    with pytest.raises(ForgeError) as caught:
        run_training(*staged(tmp_path))
    assert "no prepared data" in caught.value.message and "forge prepare tickets.csv" in caught.value.fix
    assert not (ProjectLock(tmp_path, "train").holder()), "the lock is released after a refusal"


def test_data_prepared_for_another_model_is_refused(tiny_train_project, tiny_causal_lm_dir, tmp_path):
    import shutil

    root, prepared = tiny_train_project()
    other = shutil.copytree(tiny_causal_lm_dir, tmp_path / "other-model")
    config = load_config(root).config
    config.model.ref = str(other)
    save_config(config, root / "forge.yaml")
    with pytest.raises(ForgeError) as caught:
        run_training(*staged(root))
    message = caught.value.message
    assert f"tokenized for {tiny_causal_lm_dir}" in message and str(other) in message
    assert "forge prepare" in caught.value.fix
    assert list_runs(root) == []


# ------------------------------------------------------------------------------------------------ healing


def test_out_of_memory_then_nan_are_healed(tiny_train_project, monkeypatch):
    root, _ = tiny_train_project(**FAST)
    monkeypatch.setenv("FORGE_FAULT", "oom@3,nan@6")
    result = run_training(*staged(root))
    assert result.status == "completed" and result.summary.steps == 8
    oom, nan = _records(result.run_dir, "recovery")
    assert oom["kind"] == "oom" and oom["step"] == 3 and oom["resume_from"].endswith("step-2")
    assert oom["changes"]["training.micro_batch_size"] == {"from": 4, "to": 2}
    assert oom["changes"]["training.gradient_accumulation"] == {"from": 1, "to": 2}
    assert nan["kind"] == "nan" and nan["resume_from"].endswith("step-4")  # the last good checkpoint
    assert nan["changes"]["training.learning_rate"] == {"from": 1e-3, "to": 5e-4}
    assert "memory" in oom["explanation"] and "NaN" in nan["explanation"]
    final = load_config(result.run_dir / "config.yaml").config.training
    assert (final.micro_batch_size, final.gradient_accumulation, final.learning_rate) == (2, 2, 5e-4)
    assert load_config(root).config.training.micro_batch_size == 4  # forge.yaml is the user's; untouched
    starts = _records(result.run_dir, "start")
    assert [s["step"] for s in starts] == [0, 2, 4] and starts[-1]["micro_batch_size"] == 2
    assert result.summary.config_changes["training.learning_rate"]["to"] == 5e-4
    assert len(result.summary.recoveries) == 2 and result.summary.attempts == 3
    assert sorted(p.name for p in (result.run_dir / "logs").iterdir()) == [f"worker-{i}.log" for i in (1, 2, 3)]
    assert (result.run_dir / "loss.png").stat().st_size > 0
    runs = project_status(root)["runs"]
    assert [(r["id"], r["state"], r["complete"], r["steps"]) for r in runs] == [(result.run_id, "completed", True, 8)]


def test_crash_and_kill_restart_from_the_last_checkpoint(tiny_train_project, monkeypatch):
    root, _ = tiny_train_project(**FAST)
    monkeypatch.setenv("FORGE_FAULT", "crash@3,kill@6")
    result = run_training(*staged(root))
    assert result.status == "completed" and result.summary.steps == 8
    crash, kill = _records(result.run_dir, "recovery")
    assert (crash["kind"], crash["changes"], Path(crash["resume_from"]).name) == ("crash", {}, "step-2")
    assert (kill["kind"], kill["changes"], Path(kill["resume_from"]).name) == ("killed", {}, "step-4")
    assert [s["step"] for s in _records(result.run_dir, "start")] == [0, 2, 4]
    assert "SIGKILL" in (result.run_dir / "logs" / "worker-2.log").read_text()
    assert result.summary.config_changes == {}


def test_max_recoveries_stops_then_resume_skips_a_corrupt_checkpoint(tiny_train_project, monkeypatch):
    root, _ = tiny_train_project(**FAST, max_recoveries=1)
    monkeypatch.setenv("FORGE_FAULT", "crash@3,crash@6")
    with pytest.raises(ForgeError) as caught:
        run_training(*staged(root))
    assert "training.max_recoveries (1)" in caught.value.message and "forge train --resume" in caught.value.fix
    (run_dir,) = list_runs(root)
    summary = RunSummary.load(run_dir)
    assert summary.status == "failed" and len(summary.recoveries) == 1
    assert [step for step, _ in list_checkpoints(run_dir)] == [2, 4]
    (run_dir / "checkpoints" / "step-4" / TRAINER_STATE).write_bytes(b"damaged")  # e.g. a bad disk sector
    (run_dir / "checkpoints" / "step-6").mkdir()  # a folder someone made by hand: no trainer state
    result = run_training(*staged(root), resume=True)
    assert result.status == "completed" and result.run_id == run_dir.name
    start = _records(run_dir, "start")[-1]
    assert start["step"] == 2 and start["resumed_from"].endswith("step-2")
    warnings = [w["message"] for w in _records(run_dir, "warning")]
    assert any("step-4 cannot be used" in w for w in warnings)


def test_bad_settings_are_not_retried(tiny_train_project, monkeypatch):
    root, _ = tiny_train_project(**FAST)
    monkeypatch.setenv("FORGE_FAULT", "melt@3")  # the worker refuses it as a configuration error (exit 2)
    with pytest.raises(ForgeError) as caught:
        run_training(*staged(root))
    assert "melt@3" in caught.value.message
    (run_dir,) = list_runs(root)
    assert [p.name for p in (run_dir / "logs").iterdir()] == ["worker-1.log"]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"


# ------------------------------------------------------------------------------------------------ the process


def _wait_for(run_root: Path, predicate, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run_dir in list_runs(run_root):
            for record in read_metrics(run_dir):
                if predicate(record):
                    return record
        time.sleep(0.2)
    raise AssertionError("the awaited event never came")


def _forge(*args: str, **popen) -> subprocess.Popen:
    code = "from forgellm.cli.main import run; run()"
    return subprocess.Popen([sys.executable, "-c", code, *args], text=True, **popen)


def test_kill_9_of_forge_train_leaves_no_worker_and_resume_continues(tiny_train_project):
    import signal

    import psutil

    root, _ = tiny_train_project(max_steps=400, save_every_steps=2, eval_every_steps=200)
    forge = _forge("train", "-C", str(root), "--json", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(root, lambda r: r.get("event") == "checkpoint" and r.get("step", 0) >= 2)
    workers = psutil.Process(forge.pid).children()
    os.kill(forge.pid, signal.SIGKILL)
    forge.wait()
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert workers and not alive, "the worker must die with its supervisor"
    (run_dir,) = list_runs(root)
    saved = max(step for step, _ in list_checkpoints(run_dir))
    result = run_training(*staged(root), resume=True, max_steps=saved + 2)
    assert result.status == "completed" and result.summary.steps == saved + 2
    assert _records(run_dir, "start")[-1]["step"] == saved


def test_the_watchdog_limit_grows_with_the_slowest_step_and_kills_a_silent_worker(tmp_path, monkeypatch):
    from forgellm.training.worker_process import Watchdog

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        watchdog = Watchdog(sleeper, tmp_path / ".heartbeat")
        assert watchdog.limit() == 1800  # setup (loading the model) beats nothing: a long grace
        watchdog.event({"event": "start"})
        assert watchdog.limit() == 600  # the floor, until steps are slow
        watchdog._last -= 45  # a step that took 45 s
        watchdog.event({"event": "step"})
        assert watchdog.limit() == 20 * watchdog.slowest and watchdog.slowest >= 45
        monkeypatch.setenv("FORGE_WATCHDOG_SECONDS", "1.5")
        with Watchdog(sleeper, tmp_path / ".heartbeat") as fixed:
            fixed.event({"event": "start"})
            assert fixed.limit() == 1.5
            assert sleeper.wait(timeout=20) == -9  # silent: killed
        assert fixed.silent_seconds is not None and fixed.silent_seconds >= 1.5
    finally:
        sleeper.kill()
        sleeper.wait()
