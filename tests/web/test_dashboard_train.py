"""Training started and stopped from the dashboard is `forge train` as a terminal runs it: its own
process under the project lock, its metrics streamed live, and a stop that saves a checkpoint as Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest

from forgellm.project.lock import pid_alive
from forgellm.project.run_record import list_checkpoints
from forgellm.training.summary import read_metrics
from web import dashboard_support as ds


@pytest.mark.slow  # 13-21 s on 2 cores: a real `forge train` process, its worker and a checkpoint
def test_start_streams_the_run_and_stop_saves_a_checkpoint(tiny_train_project, monkeypatch):
    root, _ = tiny_train_project(max_steps=400, save_every_steps=100, eval_every_steps=200)
    with ds.dashboard(root, monkeypatch) as url:
        started = httpx.post(f"{url}/api/train", json={}, timeout=90)
        assert started.status_code == 200, started.text
        pid, log = started.json()["pid"], root / started.json()["log"]
        try:
            deadline = time.monotonic() + 60
            while not (run_id := httpx.get(f"{url}/api/runs").json()["training_now"].get("run_id")):
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            second = httpx.post(f"{url}/api/train", json={})
            assert second.status_code == 409 and f"process {pid}" in second.json()["error"]["message"]
            events = ds.sse_events(
                f"{url}/runs/{run_id}/events", until=lambda seen: any(e[2].get("event") == "step" for e in seen)
            )
            assert events[-1][2]["step"] >= 1 and "loss" in events[-1][2]
            stopped = httpx.post(f"{url}/api/train/stop", json={})
            assert stopped.status_code == 200 and stopped.json() == {"pid": pid, "run_id": run_id, "signal": "SIGINT"}
            after = {"Last-Event-ID": str(events[-1][0])}
            tail = ds.sse_events(f"{url}/runs/{run_id}/events", headers=after, timeout=120)
            assert tail[-1][1] == "end"
            # The run's end event is written by its worker; `forge train` prints the resume hint after it
            # and then exits, so the log is complete only once the process is gone.
            deadline = time.monotonic() + 60
            while pid_alive(pid):
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
        finally:
            if pid_alive(pid):  # a failed assertion must not leave the training running
                os.killpg(pid, signal.SIGKILL)
    run_dir = root / "runs" / run_id
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    saved = [r for r in read_metrics(run_dir) if r.get("event") == "checkpoint" and r["reason"] == "signal"]
    assert saved and list_checkpoints(run_dir)[-1].step == saved[-1]["step"]
    assert "forge train --resume" in log.read_text()
