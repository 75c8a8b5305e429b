"""`forge train --gpus/--distributed/--nodes` as a user types them: bad input said plainly, Ctrl-C of a
2-process run (CPU rehearsal over gloo), and two "machines" (two forge train commands on this host, each
in its own copy of the project) meeting through --node-rank / --main-address."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from typer.testing import CliRunner

from forgellm.cli.main import app
from forgellm.training.launch import free_port
from forgellm.training.runs import list_runs
from forgellm.training.summary import read_metrics

runner = CliRunner()
PAIR = {"micro_batch_size": 1, "gradient_accumulation": 2, "packing": False}


def _forge(*args: str, env: dict[str, str], **popen) -> subprocess.Popen:
    code = "from forgellm.cli.main import run; run()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], text=True, env={**os.environ, **env}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, **popen,
    )  # fmt: skip


def _workers_of(run_dir: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        launcher = "accelerate.commands.launch" in command
        if "forgellm.training.worker" in command and str(run_dir) in command and not launcher:
            found.append(process)
    return found


def test_more_gpus_than_the_machine_has_is_refused_before_a_run_exists(tiny_train_project, monkeypatch):
    monkeypatch.delenv("FORGE_DISTRIBUTED_CPU", raising=False)
    root, _ = tiny_train_project(max_steps=2)
    result = runner.invoke(app, ["train", "-C", str(root), "--gpus", "4"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "asked to use 4 GPUs per machine, but this machine has no GPU" in result.output
    assert "FORGE_DISTRIBUTED_CPU=1" in result.output and "forge cloud launch" in result.output
    assert list_runs(root) == []
    wrong = runner.invoke(app, ["train", "-C", str(root), "--distributed", "mpi"])
    assert wrong.exit_code != 0 and "Unknown --distributed 'mpi'" in wrong.output and "ddp" in wrong.output


def test_several_machines_need_the_main_address_and_a_reachable_main(tiny_train_project, monkeypatch):
    monkeypatch.setenv("FORGE_DISTRIBUTED_CPU", "1")
    monkeypatch.setenv("FORGE_RENDEZVOUS_SECONDS", "2")
    root, _ = tiny_train_project(max_steps=2, **PAIR)
    missing = runner.invoke(app, ["train", "-C", str(root), "--nodes", "2", "--distributed", "ddp"])
    assert missing.exit_code != 0 and "needs the main machine's address" in missing.output
    port = free_port()  # nobody listens there
    args = ["--nodes", "2", "--node-rank", "1", "--main-address", "127.0.0.1", "--main-port", str(port)]
    started = time.monotonic()
    unreachable = runner.invoke(app, ["train", "-C", str(root), "--distributed", "ddp", *args])
    assert unreachable.exit_code != 0 and "Traceback" not in unreachable.output
    assert f"cannot reach the main machine at 127.0.0.1:{port}" in unreachable.output
    assert "port" in unreachable.output and "FORGE_RENDEZVOUS_SECONDS" in unreachable.output
    assert time.monotonic() - started < 30 and list_runs(root) == []


def test_ctrl_c_stops_every_rank_after_one_checkpoint(tiny_train_project):
    root, _ = tiny_train_project(max_steps=400, save_every_steps=400, eval_every_steps=400, **PAIR)
    forge = _forge("train", "-C", str(root), "--gpus", "2", "--distributed", "ddp",
                   env={"FORGE_DISTRIBUTED_CPU": "1"})  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not any(
        r.get("event") == "step" and r["step"] >= 2 for d in list_runs(root) for r in read_metrics(d)
    ):
        time.sleep(0.3)
    (run_dir,) = list_runs(root)
    assert len(_workers_of(run_dir)) == 2  # two ranks under accelerate's launcher
    forge.send_signal(signal.SIGINT)
    out, err = forge.communicate(timeout=120)
    assert forge.returncode == 130, err[-3000:]
    assert "Interrupted" in err and f"forge train --resume {run_dir.name}" in err
    checkpoints = [r for r in read_metrics(run_dir) if r.get("event") == "checkpoint"]
    assert [c["reason"] for c in checkpoints] == ["signal"]  # written once, by rank 0
    ends = [r for r in read_metrics(run_dir) if r.get("event") == "end"]
    assert [e["reason"] for e in ends] == ["interrupted"]
    assert _workers_of(run_dir) == []


def test_two_machines_meet_at_the_main_address(tiny_train_project, tmp_path):
    """nodes=2 × 1 process: two `forge train` commands, as on two machines, each with its own project copy."""
    root, _ = tiny_train_project(max_steps=2, save_every_steps=2, eval_every_steps=2, **PAIR)
    second = tmp_path / "machine-2"
    shutil.copytree(root, second, symlinks=True)
    port = free_port()
    common = ["--distributed", "ddp", "--nodes", "2", "--main-address", "127.0.0.1", "--main-port", str(port)]
    env = {"FORGE_DISTRIBUTED_CPU": "1"}
    main = _forge("train", "-C", str(root), "--node-rank", "0", *common, env=env)
    other = _forge("train", "-C", str(second), "--node-rank", "1", *common, env=env)
    main_out, main_err = main.communicate(timeout=300)
    other_out, other_err = other.communicate(timeout=120)
    assert main.returncode == 0, main_err[-3000:]
    assert other.returncode == 0, other_err[-3000:]
    (run_dir,) = list_runs(root)
    start = next(r for r in read_metrics(run_dir) if r.get("event") == "start")
    assert (start["world_size"], start["distributed"]) == (2, "ddp")
    assert (run_dir / "checkpoints" / "step-2").is_dir()
    (other_run,) = list_runs(second)  # rank 1's machine took part but wrote no checkpoint of its own
    assert not (other_run / "checkpoints").exists() or not any((other_run / "checkpoints").iterdir())
