"""The Runner protocol: where the training supervisor starts each worker attempt, and where a whole
stage (`forge prepare`, `forge export`) runs.

LocalRunner  a subprocess of this Python (the supervisor's own ``start_worker``): today's behaviour.
DockerRunner a container of Forge's image (container.py says what it gets). The container looks like a
             process to the supervisor (ContainerProcess: stdout of events, poll, wait, send_signal,
             kill), so the display, metrics.jsonl, the worker log, Ctrl-C, the watchdog and healing are
             the same code for both. It is named after the run and attempt and removed when it ends.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

from forgellm.errors import ErrorCode, ForgeError
from forgellm.runtime.container import (
    ContainerSpec,
    cache_dirs,
    container_name,
    environment,
    host_user,
    path_settings,
    plan_mounts,
)
from forgellm.training.protocol import ExitCode

# Signals a container's exit code says killed its main process (128 + n): the worker's own exits
# (130 after SIGINT/SIGTERM) are codes, not deaths.
_DEATHS = (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS)


class WorkerProcess(Protocol):
    """What the supervisor needs of a worker: subprocess.Popen has it, so does ContainerProcess."""

    stdout: IO[str] | None

    def poll(self) -> int | None: ...
    def wait(self) -> int: ...
    def send_signal(self, signum: int) -> None: ...
    def kill(self) -> None: ...


class Runner(Protocol):
    name: str  # "local" | "docker"

    def start_worker(
        self, run_dir: Path, resume_from: Path | None, log: IO[bytes], cwd: Path, *, run_id: str, attempt: int
    ) -> WorkerProcess: ...

    def exit_error(self, process: WorkerProcess) -> dict[str, Any] | None:
        """An `error` event for an attempt whose worker could not send one (an OOM-killed container)."""
        ...


class LocalRunner:
    name = "local"

    def start_worker(
        self, run_dir: Path, resume_from: Path | None, log: IO[bytes], cwd: Path, *, run_id: str, attempt: int
    ) -> WorkerProcess:
        from forgellm.training.worker_process import start_worker

        return start_worker(run_dir, resume_from, log, cwd)

    def exit_error(self, process: WorkerProcess) -> dict[str, Any] | None:
        return None


class ContainerProcess:
    """A started container seen as a process. Its output is read by one thread: stdout to ``on_stdout``,
    stderr to ``on_stderr`` (with a TTY, both come as stdout). ``wait`` removes the container."""

    def __init__(self, client: Any, spec: ContainerSpec, on_stdout: Callable[[bytes], None],
                 on_stderr: Callable[[bytes], None], on_end: Callable[[], None] = lambda: None) -> None:  # fmt: skip
        self.client, self.spec = client, spec
        self.returncode: int | None = None
        self.oom_killed = False
        self.stdout: IO[str] | None = None
        try:
            self.container = client.containers.create(**spec.create_kwargs())
        except Exception as exc:
            on_end()
            raise _run_failed(spec, exc) from None
        try:
            # Attached before the start, with the logs so far: no early line is lost.
            stream = client.api.attach(self.container.id, stdout=True, stderr=True, stream=True, logs=True, demux=True)
            self._reader = threading.Thread(
                target=self._read, args=(stream, on_stdout, on_stderr, on_end), name="forge-container", daemon=True
            )
            self._reader.start()
            self.container.start()
        except Exception as exc:
            self._remove()
            raise _run_failed(spec, exc) from None

    @staticmethod
    def _read(stream: Any, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None],
              on_end: Callable[[], None]) -> None:  # fmt: skip
        try:
            for out, err in stream:
                if out:
                    on_stdout(out)
                if err:
                    on_stderr(err)
        except Exception:  # the container was removed under us: its end is read from the engine
            pass
        finally:
            on_end()

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        try:
            self.container.reload()
        except Exception:
            return -signal.SIGKILL  # removed from outside (`docker rm -f`)
        state = self.container.attrs.get("State") or {}
        return None if state.get("Running") or state.get("Status") == "created" else self._code(state)

    def wait(self) -> int:
        if self.returncode is not None:
            return self.returncode
        state: dict[str, Any] = {}
        try:
            self.container.wait()
            self.container.reload()
            state = self.container.attrs.get("State") or {}
        except Exception:
            state = {"ExitCode": 128 + signal.SIGKILL}
        self._reader.join(timeout=30)
        self.returncode = self._code(state)
        self._remove()
        return self.returncode

    def _code(self, state: dict[str, Any]) -> int:
        code = int(state.get("ExitCode") or 0)
        if state.get("OOMKilled"):
            self.oom_killed = True
            return int(ExitCode.OOM)
        if code > 128 and code - 128 in [int(s) for s in _DEATHS]:
            return -(code - 128)  # as subprocess reports a death: healing classifies it as killed
        return code

    def send_signal(self, signum: int) -> None:
        try:
            self.container.kill(signal=int(signum))
        except Exception:  # it already ended
            pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _remove(self) -> None:
        try:
            self.container.remove(force=True)
        except Exception:
            pass


class DockerRunner:
    """Stages in containers of ``image``; ``gpus``: pass the machine's GPUs (device requests)."""

    name = "docker"

    def __init__(self, client: Any, image: str, *, gpus: bool = False) -> None:
        self.client, self.image, self.gpus = client, image, gpus

    def spec(
        self,
        name: str,
        command: list[str],
        cwd: Path,
        *,
        project_dir: Path,
        read_only: list[Path] = (),  # type: ignore[assignment]
        memory_limit: int | None = None,
        tty: bool = False,
        env: dict[str, str] | None = None,
    ) -> ContainerSpec:
        env = environment(env)
        mounts = plan_mounts(project_dir, [*read_only, *path_settings(env)], cache_dirs())
        return ContainerSpec(self.image, name, command, cwd, mounts, env, host_user(), self.gpus, memory_limit, tty)

    def start_worker(
        self, run_dir: Path, resume_from: Path | None, log: IO[bytes], cwd: Path, *, run_id: str, attempt: int
    ) -> WorkerProcess:
        from forgellm.project.run_record import RunSpec
        from forgellm.training.worker_process import memory_limit

        run = RunSpec.load(run_dir)
        command = ["python", "-m", "forgellm.training.worker", str(run_dir)]
        if resume_from is not None:
            command += ["--resume", str(resume_from)]
        limit = memory_limit()
        spec = self.spec(
            container_name(run_id, f"a{attempt}"), command, cwd, project_dir=Path(run.project_dir),
            read_only=[Path(run.model_dir), Path(run.prepared_dir)], memory_limit=limit,
        )  # fmt: skip
        for leftover in self._leftovers(container_name(run_id, "a")):
            log.write(f"supervisor: removed container {leftover} left by a supervisor that was killed\n".encode())
        log.write(f"supervisor: the worker runs in container {spec.name} of image {spec.image}".encode())
        log.write(f" (memory limit {limit} bytes)\n".encode() if limit else b"\n")
        log.flush()
        read_end, write_end = os.pipe()

        def write_stdout(data: bytes) -> None:
            os.write(write_end, data)

        def write_log(data: bytes) -> None:
            log.write(data)
            log.flush()

        process = ContainerProcess(self.client, spec, write_stdout, write_log, lambda: os.close(write_end))
        process.stdout = os.fdopen(read_end, "r", encoding="utf-8", errors="replace")
        return process

    def _leftovers(self, prefix: str) -> list[str]:
        """Containers of this run's earlier attempts still there: a `forge train` killed with SIGKILL
        cannot remove its container, which would go on writing checkpoints beside the new attempt (the
        project lock says no other supervisor trains this run now). Removed, their names returned."""
        removed = []
        try:
            for container in self.client.containers.list(all=True, filters={"name": prefix}):
                if container.name.startswith(prefix):
                    container.remove(force=True)
                    removed.append(container.name)
        except Exception:  # the attempt's own start says what is wrong with the engine
            pass
        return removed

    def exit_error(self, process: WorkerProcess) -> dict[str, Any] | None:
        if not getattr(process, "oom_killed", False):
            return None
        limit = getattr(getattr(process, "spec", None), "memory_limit", None)
        within = f" (its memory limit: {limit} bytes)" if limit else ""
        message = f"the container ran out of memory and the kernel's OOM killer ended it{within}"
        return {
            "event": "error", "kind": "oom", "code": str(ErrorCode.TRAIN_OUT_OF_MEMORY), "message": message,
            "fix": None, "details": [], "data": {"cause": "out of memory: container OOMKilled"}, "step": None,
        }  # fmt: skip

    def run_command(self, name: str, command: list[str], cwd: Path, *, project_dir: Path,
                    read_only: list[Path] = (), env: dict[str, str] | None = None) -> int:  # type: ignore[assignment]  # fmt: skip
        """A whole stage in a container, its output on this terminal (a TTY when there is one, so its
        progress bars render); Ctrl-C: the first reaches the stage, a second kills the container.
        Returns its exit code."""
        from forgellm.training.worker_process import Interrupts

        tty = sys.stdout.isatty()
        spec = self.spec(name, command, cwd, project_dir=project_dir, read_only=list(read_only), tty=tty, env=env)
        out, err = sys.stdout.buffer, sys.stderr.buffer
        sys.stdout.flush()
        sys.stderr.flush()

        def write(stream: IO[bytes]) -> Callable[[bytes], None]:
            def emit(data: bytes) -> None:
                stream.write(data)
                stream.flush()

            return emit

        with Interrupts() as interrupts:
            process = ContainerProcess(self.client, spec, write(out), write(err))
            interrupts.process = process  # type: ignore[assignment]
            try:
                return process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                    process.wait()


def _run_failed(spec: ContainerSpec, exc: BaseException) -> ForgeError:
    text = " ".join(str(exc).split())[:400]
    return ForgeError(
        f"Docker could not start container {spec.name} of image {spec.image}: {text}",
        fix="Check the engine (`docker info`) and the image (`forge docker status`); or run with --runtime local.",
        code=ErrorCode.DOCKER_RUN_FAILED,
    )
