"""One writing command at a time per project: prepare, eval and export (like train) are refused while
another process holds the project lock, with who holds it; ignite's stages take it again inside ignite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from stage_support import staged

from forgellm.errors import ErrorCode, ForgeError
from forgellm.project.lock import ProjectLock

_HOLD = """
import sys, time
from pathlib import Path
from forgellm.project.lock import ProjectLock
ProjectLock(Path(sys.argv[1]), sys.argv[2]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def _held_by(root: Path, command: str) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(root), command], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_prepare_eval_and_export_wait_for_the_command_holding_the_project(tiny_train_project, tmp_path):
    from forgellm.data.prepare.run import prepare_dataset
    from forgellm.evaluation import evaluate_run
    from forgellm.export.pipeline import export_model

    root, _prepared = tiny_train_project()
    data = tmp_path / "more.jsonl"
    data.write_text('{"question": "Hi?", "answer": "Hello."}\n')
    holder = _held_by(root, "prepare")
    try:
        for stage in (
            lambda: prepare_dataset(*staged(root), data),
            lambda: evaluate_run(*staged(root)),
            lambda: export_model(*staged(root)),
        ):
            with pytest.raises(ForgeError) as caught:
                stage()
            assert caught.value.code == ErrorCode.PROJECT_LOCKED
            assert "Another `forge prepare` is running" in caught.value.message
            assert str(holder.pid) in caught.value.message and caught.value.data["command"] == "prepare"
    finally:
        holder.kill()  # kill -9: the kernel drops the lock, the next command takes it over
        holder.wait()
    with ProjectLock(root, "prepare") as lock:
        lock.acquire()
        assert lock.holder()["command"] == "prepare"


def test_the_lock_is_reentrant_in_one_process_and_names_the_inner_command(tmp_path):
    outer = ProjectLock(tmp_path, "ignite")
    outer.acquire()
    try:
        with ProjectLock(tmp_path, "train") as inner:  # ignite's train stage: not refused by its own ignite
            inner.acquire("run-1")
            assert (inner.holder()["command"], inner.holder()["run_id"]) == ("train", "run-1")
        assert outer.holder()["command"] == "ignite"  # the outer command again once the stage is done
    finally:
        outer.release()
    assert outer.holder() == {}  # released: the record is emptied
