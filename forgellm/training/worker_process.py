"""The worker's process as the supervisor handles it: started (alone, or in a group through accelerate's
launcher), limited (the memory drill), watched (the heartbeat watchdog) and signalled (Ctrl-C)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from forgellm.errors import ErrorCode, ForgeError
from forgellm.training.launch import LaunchOptions, ParallelPlan, worker_command
from forgellm.training.protocol import (
    MEMORY_LIMIT_ENV,
    WATCHDOG_ENV,
    WATCHDOG_MIN_SECONDS,
    WATCHDOG_STARTUP_SECONDS,
    WATCHDOG_STEP_FACTOR,
)


class Interrupts:
    """Ctrl-C (SIGINT), SIGTERM and SIGHUP while training: the first asks the worker to save a
    checkpoint and stop; a second one stops it at once (the previous checkpoint is intact)."""

    def __init__(self) -> None:
        self.count = 0
        self.process: subprocess.Popen | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        process = self.process
        if process is None or process.poll() is not None:
            return
        if self.count == 1:
            ranks = _ranks_of(process)
            for rank in ranks:
                _send(rank, signal.SIGINT)
            if not ranks:  # one worker, or a container (which forwards the signal itself)
                process.send_signal(signal.SIGINT)
        else:
            process.kill()  # a group's ranks die with their launcher (worker.die_with_launcher)

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():  # signals can only be caught there
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _ranks_of(process: Any) -> list[int]:
    """The ranks accelerate's launcher started, when ``process`` is one (they save a checkpoint together;
    the launcher itself would forward the signal with a 30 s limit); none for a single worker or a container."""
    import psutil

    pid = getattr(process, "pid", None)  # a container's process has none on this machine
    if pid is None:
        return []
    try:
        children = psutil.Process(pid).children()
        return [c.pid for c in children if "forgellm.training.worker" in " ".join(c.cmdline())]
    except psutil.Error:
        return []


def _send(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def die_with_parent(parent: int) -> Callable[[], None] | None:
    """Linux: the kernel kills the worker if `forge train` itself dies (kill -9), so no orphan keeps
    training and writing checkpoints while a resumed run starts another worker."""
    if not sys.platform.startswith("linux"):
        return None

    def set_death_signal() -> None:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(1)

    return set_death_signal


def memory_limit() -> int | None:
    """The drill's memory limit for the worker (protocol.MEMORY_LIMIT_ENV), in bytes; None when unset."""
    value = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) <= 0:
        raise ForgeError(
            f"{MEMORY_LIMIT_ENV}={value!r} is not a number of bytes.",
            fix=f"Set {MEMORY_LIMIT_ENV} to a whole number of bytes (e.g. 4000000000), or unset it.",
            code=ErrorCode.USAGE_INVALID,
        )
    return int(value)


def watchdog_seconds() -> float | None:
    """The watchdog's fixed limit (protocol.WATCHDOG_ENV), in seconds; None: derived from the steps."""
    value = os.environ.get(WATCHDOG_ENV, "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ForgeError(
            f"{WATCHDOG_ENV}={value!r} is not a number of seconds.",
            fix=f"Set {WATCHDOG_ENV} to a positive number of seconds, or unset it for the automatic limit.",
            code=ErrorCode.USAGE_INVALID,
        )
    return seconds


def _child_setup(parent: int, limit: int | None) -> Callable[[], None] | None:
    """What the worker's process does before it runs Python: die with its parent, and take the memory
    limit (RLIMIT_DATA counts the heap and every private writable mapping, which is where torch's
    tensors live; RLIMIT_AS would also count the large address ranges libraries reserve but never use)."""
    die = die_with_parent(parent)
    if die is None and limit is None:
        return None

    def setup() -> None:
        if limit is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        if die is not None:
            die()

    return setup


def _allocator_for(limit: int | None) -> dict[str, str]:
    """Under the drill's RLIMIT_DATA, pyarrow's own allocator (mimalloc) is swapped for the system's:
    mimalloc reserves its arenas (up to 1 GiB) as writable memory that RLIMIT_DATA counts though it is
    never touched, and how much it reserves varies from run to run, so the limit would measure that
    instead of the training step (measured: the same limit failed or passed the same run either way)."""
    if limit is None or "ARROW_DEFAULT_MEMORY_POOL" in os.environ:
        return {}
    return {"ARROW_DEFAULT_MEMORY_POOL": "system"}


def start_worker(
    run_dir: Path,
    resume_from: Path | None,
    log: IO[bytes],
    cwd: Path,
    plan: ParallelPlan | None = None,
    options: LaunchOptions | None = None,
) -> subprocess.Popen:
    """The worker process, or accelerate's launcher with one worker per GPU (launch.py)."""
    plan, options = plan or ParallelPlan(), options or LaunchOptions()
    command = worker_command(run_dir, resume_from, plan, options)
    if plan.strategy != "none":
        log.write(f"supervisor: {plan.strategy} on {plan.world_size} processes: {' '.join(command)}\n".encode())
        log.flush()
    limit = memory_limit()
    if limit is not None:
        log.write(f"supervisor: the worker runs with RLIMIT_DATA = {limit} bytes ({MEMORY_LIMIT_ENV})\n".encode())
        log.flush()
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **_allocator_for(limit)},
        text=True,
        encoding="utf-8",
        errors="replace",
        # Its own session: Ctrl-C in the terminal reaches only the supervisor, which forwards one SIGINT.
        start_new_session=True,
        preexec_fn=_child_setup(os.getpid(), limit),
    )


class Watchdog:
    """Kills a worker whose heartbeat stopped (protocol.py): no event and no touch of ``.heartbeat`` for
    longer than the limit. A thread of the supervisor watches; the worker beats from its training loop."""

    def __init__(self, process: subprocess.Popen, heartbeat: Path) -> None:
        self.process, self.heartbeat = process, heartbeat
        self.fixed = watchdog_seconds()
        self.started = False  # the worker's `start` event came: setup is over
        self.slowest = 0.0  # the longest silence between two beats seen so far
        self.silent_seconds: float | None = None
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="forge-watchdog", daemon=True)

    def limit(self) -> float:
        if not self.started:
            return max(self.fixed or 0.0, WATCHDOG_STARTUP_SECONDS)
        if self.fixed is not None:
            return self.fixed
        return max(WATCHDOG_MIN_SECONDS, WATCHDOG_STEP_FACTOR * self.slowest)

    def event(self, event: dict[str, Any]) -> None:
        """An event from the worker: a beat; `start` ends the setup's grace."""
        silence = self._silence()
        if self.started:
            self.slowest = max(self.slowest, silence)
        self.started = self.started or event.get("event") == "start"
        self._last = time.monotonic()

    def _silence(self) -> float:
        silence = time.monotonic() - self._last
        try:  # the file's time is wall-clock time; the events' is monotonic
            silence = min(silence, time.time() - self.heartbeat.stat().st_mtime)
        except OSError:
            pass
        return silence

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.limit() / 4)):
            silence = self._silence()
            if silence >= self.limit() and self.process.poll() is None:
                self.silent_seconds = round(silence, 1)
                self.process.kill()
                return

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
