"""`forge train` as a user runs it: live display and summary, --json, --resume, Ctrl-C, a second
training in the same project, bad input and a disk that fills up during a checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from forgellm.cli.main import app
from forgellm.config.io import save_config
from forgellm.config.schema import ForgeConfig
from forgellm.project.run_record import list_checkpoints
from forgellm.training.runs import list_runs
from forgellm.training.summary import read_metrics

runner = CliRunner()


def _forge(*args: str, **popen) -> subprocess.Popen:
    code = "from forgellm.cli.main import run; run()"
    return subprocess.Popen([sys.executable, "-c", code, *args], text=True, **popen)


def _wait_for(root: Path, predicate, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run_dir in list_runs(root):
            for record in read_metrics(run_dir):
                if predicate(record):
                    return record
        time.sleep(0.2)
    raise AssertionError("the awaited event never came")


def test_train_shows_progress_and_a_summary_and_status_lists_the_run(tiny_train_project):
    root, _ = tiny_train_project(max_steps=4, save_every_steps=2, eval_every_steps=2)
    result = runner.invoke(app, ["train", "-C", str(root)])
    assert result.exit_code == 0, result.output[-3000:]
    (run_dir,) = list_runs(root)
    out = result.output
    assert f"Started run {run_dir.name}" in out
    assert "validation loss" in out and "step 4/4" in out
    for label in ("Status", "completed (max_steps)", "Best val loss", "Best model", "Loss plot", "summary.json"):
        assert label in out
    status = runner.invoke(app, ["status", str(root)])
    assert run_dir.name in status.output and "(incomplete)" not in status.output


def test_json_output_is_the_summary(tiny_train_project):
    root, _ = tiny_train_project(max_steps=2, save_every_steps=2, eval_every_steps=2)
    result = runner.invoke(app, ["train", "-C", str(root), "--json"])
    assert result.exit_code == 0, result.output[-3000:]
    data = json.loads(result.stdout)
    assert data["status"] == "completed" and data["steps"] == 2 and data["recoveries"] == []
    assert Path(data["paths"]["best"]).is_dir() and Path(data["paths"]["loss_plot"]).is_file()


def test_bad_input_is_a_message_not_a_traceback(tmp_path):
    no_project = runner.invoke(app, ["train", "-C", str(tmp_path)])
    assert no_project.exit_code == 1 and "forge init" in no_project.output
    save_config(ForgeConfig(), tmp_path / "forge.yaml")
    nothing = runner.invoke(app, ["train", "-C", str(tmp_path), "--resume"])
    assert nothing.exit_code == 1 and "no unfinished run" in nothing.output
    unknown = runner.invoke(app, ["train", "-C", str(tmp_path), "--resume", "20990101-000000-x"])
    assert unknown.exit_code == 1 and "no run '20990101-000000-x'" in unknown.output
    stray = runner.invoke(app, ["train", "-C", str(tmp_path), "20990101-000000-x"])
    assert stray.exit_code == 1 and "forge train --resume 20990101-000000-x" in stray.output
    for result in (no_project, nothing, unknown, stray):
        assert "Traceback" not in result.output


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tiny_train_project):
    root, _ = tiny_train_project(max_steps=400, save_every_steps=100, eval_every_steps=200)
    forge = _forge("train", "-C", str(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(root, lambda r: r.get("event") == "step")
        (run_dir,) = list_runs(root)
        second = runner.invoke(app, ["train", "-C", str(root)])
        assert second.exit_code == 1
        assert run_dir.name in second.output and str(forge.pid) in second.output
        forge.send_signal(signal.SIGINT)
        out, err = forge.communicate(timeout=120)
    finally:
        if forge.poll() is None:
            forge.kill()
    assert forge.returncode == 130, err[-3000:]
    assert f"forge train --resume {run_dir.name}" in err
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    saved = [r for r in read_metrics(run_dir) if r.get("event") == "checkpoint" and r["reason"] == "signal"]
    assert saved and list_checkpoints(run_dir)[-1][0] == saved[-1]["step"]
    step = saved[-1]["step"]
    resumed = runner.invoke(
        app, ["train", "-C", str(root), "--resume", run_dir.name, "--json", "--max-steps", str(step + 2)]
    )
    assert resumed.exit_code == 0, resumed.output[-3000:]
    assert json.loads(resumed.stdout)["steps"] == step + 2
    starts = [r for r in read_metrics(run_dir) if r.get("event") == "start"]
    assert starts[-1]["step"] == step


_FILE_SIZE_LIMIT = 24_000  # bytes: the logs fit, the first checkpoint's weights (~35 kB) do not


def _limit_file_size() -> None:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (_FILE_SIZE_LIMIT, _FILE_SIZE_LIMIT))


def test_a_full_disk_during_a_checkpoint_is_a_clear_error_and_resume_works(tiny_train_project):
    root, _ = tiny_train_project(max_steps=4, save_every_steps=2, eval_every_steps=100)
    forge = _forge(
        "train", "-C", str(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_limit_file_size
    )
    out, err = forge.communicate(timeout=300)
    assert forge.returncode == 1, err[-3000:]
    assert "disk" in err and "--resume" in err and "Traceback" not in err
    (run_dir,) = list_runs(root)
    assert list_checkpoints(run_dir) == []  # the half-written one does not count
    assert [p.name for p in (run_dir / "logs").iterdir()] == ["worker-1.log"], "a full disk is not retried"
    resumed = runner.invoke(app, ["train", "-C", str(root), "--resume", "--json"])
    assert resumed.exit_code == 0, resumed.output[-3000:]
    assert json.loads(resumed.stdout)["status"] == "completed"
    assert os.path.getsize(run_dir / "summary.json") > 0


def test_a_forced_precision_this_machine_cannot_run_is_a_message_with_the_fix(tiny_train_project, monkeypatch):
    """fp16 needs CUDA: on this CPU-only machine `forge train` says so and how to fix it, no traceback."""
    root, _ = tiny_train_project(precision="fp16")
    result = runner.invoke(app, ["train", "-C", str(root)])
    assert result.exit_code != 0
    text = " ".join(result.output.split())
    assert "training.precision is fp16, but this machine has no NVIDIA GPU" in text
    assert "Set training.precision to auto" in text and "Traceback" not in result.output
