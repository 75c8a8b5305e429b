"""Starting and stopping training from the dashboard, exactly as a terminal does.

Start: `forge train` as its own process (the same supervisor, the same project lock), detached from the
server in a session of its own so that stopping the server leaves the training running; its output goes
to a log file under .forge/. The lock is tried first so that a second training is refused with the lock's
own message; after spawning, we wait until the child holds the lock, or report its log tail if it died.

Stop: SIGINT to the process holding the train lock, which is what Ctrl-C in its terminal sends: the
supervisor asks its worker to save a checkpoint and stop, and `forge train --resume` continues it later.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from forgellm.errors import ErrorCode, ForgeError
from forgellm.project.layout import ProjectLayout
from forgellm.project.lock import ProjectLock

# The CLI's entry point, as the console script `forge` calls it (forgellm.cli.main has no __main__).
FORGE_CODE = "from forgellm.cli.main import run; run()"
STARTUP_SECONDS = 60.0  # how long a start waits for the child to take the lock (imports, config checks)
LOG_TAIL_BYTES = 4000
_STARTING = threading.Lock()  # two clicks at once: the second waits, then finds the lock taken


@dataclass(frozen=True)
class TrainOptions:
    """What the page may ask for: `forge train [--resume [RUN]] [--max-steps N]`."""

    resume: bool = False
    run_id: str | None = None
    max_steps: int | None = None

    def arguments(self, root: Path) -> list[str]:
        args = ["train", "--project", str(root)]
        if self.resume:
            args.append("--resume")
            if self.run_id:
                args.append(self.run_id)
        if self.max_steps is not None:
            args += ["--max-steps", str(self.max_steps)]
        return args


def train_log(root: Path, started: float) -> Path:
    return ProjectLayout(root).ui_train_log(f"{datetime.fromtimestamp(started):%Y%m%d-%H%M%S-%f}")


def check_unlocked(root: Path) -> None:
    """ForgeError PROJECT_LOCKED (the lock's own message) when another writing command holds the project."""
    lock = ProjectLock(root, "train")
    lock.acquire()  # raises the holder's message; released at once, before the child takes it
    lock.release()


def log_tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", errors="replace").strip()


def _holds_train_lock(root: Path, pid: int) -> bool:
    from forgellm.status.stages import training_now

    now = training_now(root)
    return now is not None and now.get("pid") == pid


def _reap(process: subprocess.Popen) -> None:
    # The child outlives nothing of ours, but an exited child left unwaited would stay a zombie.
    threading.Thread(target=process.wait, name=f"forge-train-{process.pid}", daemon=True).start()


def start_training(root: Path, options: TrainOptions, *, wait: float = STARTUP_SECONDS) -> dict[str, Any]:
    """Start `forge train` in `root`; returns {pid, log, run_id} once the child holds the lock (run_id may
    still be null while it creates the run). ForgeError when the project is locked or the child died."""
    with _STARTING:
        return _start(root.resolve(), options, wait)


def _start(root: Path, options: TrainOptions, wait: float) -> dict[str, Any]:
    check_unlocked(root)
    started = time.time()
    log = train_log(root, started)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", FORGE_CODE, *options.arguments(root)],
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # the server's Ctrl-C must not stop the training
        )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise _died(root, log, code)
        if _holds_train_lock(root, process.pid):
            break
        time.sleep(0.1)
    _reap(process)
    from forgellm.status.stages import training_now

    now = training_now(root) or {}
    return {"pid": process.pid, "log": str(log.relative_to(root)), "run_id": now.get("run_id"), "started": True}


def _died(root: Path, log: Path, code: int) -> ForgeError:
    tail = log_tail(log)
    locked = "project-locked" in tail or "Another `forge" in tail
    return ForgeError(
        f"`forge train` stopped at once (exit code {code}):\n{tail or '(it wrote nothing)'}",
        fix=f"Its whole output is in {log.relative_to(root)}; fix what it says and start again.",
        code=ErrorCode.PROJECT_LOCKED if locked else ErrorCode.TRAIN_START_FAILED,
        data={"exit_code": code, "log": str(log)},
    )


def stop_training(root: Path) -> dict[str, Any]:
    """SIGINT to the training process of this project (as Ctrl-C); ForgeError when none trains."""
    from forgellm.status.stages import training_now

    now = training_now(root.resolve())
    pid = (now or {}).get("pid")
    if not isinstance(pid, int):
        raise ForgeError(
            "No training is running in this project.",
            fix="Start one with the Train button or `forge train`.",
            code=ErrorCode.NO_TRAINING_RUN,
        )
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        raise ForgeError(
            f"The training process {pid} has just ended.", fix="Reload the page.", code=ErrorCode.NO_TRAINING_RUN
        ) from None
    except PermissionError:
        raise ForgeError(
            f"The training process {pid} belongs to another user, so the dashboard cannot stop it.",
            fix=f"Stop it in its own terminal with Ctrl-C (or `kill -INT {pid}` as its user).",
            code=ErrorCode.USAGE_INVALID,
        ) from None
    return {"pid": pid, "run_id": (now or {}).get("run_id"), "signal": "SIGINT"}
