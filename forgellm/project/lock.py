"""One writing command at a time per project: prepare, train, eval, export and ignite take the project
lock, an OS lock (flock) on .forge/project.lock. The kernel releases it when its holder dies, even by `kill -9`,
so a stale lock file is simply taken over. The file records who holds it (command, run, process), so a
refusal names them and `forge status` can tell a training that is running now.

Re-entrant within one process: `forge ignite` holds it and the stages it calls take it again; the record
then names the inner command (train and its run while ignite trains) and the outer one again after it.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from forgellm.errors import ErrorCode, ForgeError
from forgellm.files import read_json_object
from forgellm.project.layout import ProjectLayout

P = ParamSpec("P")
R = TypeVar("R")
# lock file -> (its descriptor, the holders' records, outermost first) of the locks this process holds
_HELD: dict[Path, tuple[int, list[dict[str, Any]]]] = {}
# A holder that runs a stage as another process (ignite -> `forge prepare` in a Docker container) hands it
# the lock: a token in its record and in this variable of the child's environment (hand_over).
HANDED_ENV = "FORGE_PROJECT_LOCK_TOKEN"
_HANDED: set[Path] = set()  # locks this process holds because its parent handed them over


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # alive, owned by someone else / not a pid at all
        return True
    return True


class ProjectLock:
    """``with ProjectLock(root, "prepare"): ...``, or ``acquire()``/``release()`` around the work."""

    def __init__(self, project_dir: Path, command: str) -> None:
        self.path = ProjectLayout(Path(project_dir).expanduser().resolve()).project_lock
        self.command = command
        self._holding = False

    def acquire(self, run_id: str | None = None) -> None:
        import fcntl

        record = {"command": self.command, "run_id": run_id, "pid": os.getpid(), "started": time.time()}
        if self.path in _HELD:  # this process holds it already (ignite -> its stages)
            _HELD[self.path][1].append(record)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: the holder's record stays
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                token = os.environ.get(HANDED_ENV)
                if not token or self.holder().get("handed_to") != token:
                    os.close(fd)
                    raise self._busy() from None
                _HANDED.add(self.path)  # the holder waits for us: we write under its lock
            _HELD[self.path] = (fd, [record])
        self._holding = True
        self._write()

    def record(self, run_id: str | None) -> None:
        """Name the run once it exists (train knows its id only after it made the run folder)."""
        assert self._holding, "record() needs the lock"
        _HELD[self.path][1][-1]["run_id"] = run_id
        self._write()

    def holder(self) -> dict[str, Any]:
        return read_json_object(self.path)

    def release(self) -> None:
        if not self._holding:
            return
        import fcntl

        self._holding = False
        fd, records = _HELD[self.path]
        records.pop()
        if records:  # an outer command of this process still holds it
            self._write()
            return
        del _HELD[self.path]
        if self.path in _HANDED:  # the lock is the holder's: it rewrites its own record when we are done
            _HANDED.discard(self.path)
            os.close(fd)
            return
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def hand_over(self) -> dict[str, str]:
        """The environment that lets a child process (a container) take this lock while we hold it."""
        import secrets

        assert self._holding, "hand_over() needs the lock"
        token = secrets.token_hex(16)
        _HELD[self.path][1][-1]["handed_to"] = token
        self._write()
        return {HANDED_ENV: token}

    def take_back(self) -> None:
        """After the child ended: our record again, without the token."""
        _HELD[self.path][1][-1].pop("handed_to", None)
        self._write()

    def _write(self) -> None:
        fd, records = _HELD[self.path]
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(records[-1]).encode(), 0)

    def _busy(self) -> ForgeError:
        holder = self.holder()
        command, run_id, pid = holder.get("command") or "train", holder.get("run_id"), holder.get("pid", "?")
        started = holder.get("started")
        since = f", started {datetime.fromtimestamp(started):%Y-%m-%d %H:%M}" if isinstance(started, float) else ""
        alive = isinstance(pid, int) and pid_alive(pid)
        where = "." if alive else ", holding the lock from another machine or container."
        what = f"run {run_id or '(starting)'} (process {pid}{since})" if command == "train" else f"process {pid}{since}"
        fix = f"Wait for it to finish, or stop it with Ctrl-C in its terminal (or `kill -INT {pid}`)"
        fix += "; `forge train --resume` then continues it from its last checkpoint." if command == "train" else "."
        return ForgeError(
            f"Another `forge {command}` is running in this project: {what}{where}"
            + ("" if command == self.command else f" `forge {self.command}` waits for it: one writer at a time."),
            fix=fix,
            code=ErrorCode.PROJECT_LOCKED,
            data={"command": command, "run": run_id, "pid": pid},
        )

    def __enter__(self) -> ProjectLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def locked(command: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A stage function ``f(layout, ...)`` that runs holding the project lock as `forge <command>`."""

    def wrap(stage: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(stage)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            layout = args[0] if args else kwargs["layout"]
            with ProjectLock(layout.root, command) as lock:  # type: ignore[union-attr]
                lock.acquire()
                return stage(*args, **kwargs)

        return run

    return wrap
