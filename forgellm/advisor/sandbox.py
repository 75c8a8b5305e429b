"""Run an advisor-written script where it cannot hurt: bubblewrap on Linux, or a Docker container.

The script sees the Python interpreter and its standard library, its own folder (``/work``, the
only writable place, capped in size and in files) with its inputs bound read-only inside, no
network, no other host files, no credentials, an empty environment and a system-call filter.
Limits: memory, CPU time, size of each written file, number of processes, wall time.
The bubblewrap mode is built in ``sandbox_bwrap``, the Docker mode in ``sandbox_docker`` (with its
image in ``sandbox_image``; their docstrings say how), the filter in ``seccomp``, what they share (limits,
names inside) in ``sandbox_limits``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from forgellm.advisor.sandbox_limits import (  # noqa: F401 (SandboxLimits is re-exported: the API takes it)
    MINIMAL_ENV,
    NOBODY,
    SANDBOX_DIR,
    SCRIPT_NAME,
    TAIL_CHARS,
    SandboxLimits,
)
from forgellm.errors import ErrorCode, ForgeError

Runtime = Literal["auto", "bubblewrap", "docker"]
_BWRAP_INSTALL = "`sudo apt-get install bubblewrap` (or `sudo dnf install bubblewrap`)"

# Runs just before the script when there is no sandbox: set the limits, then become the script.
_LAUNCHER = """\
import json, os, resource, sys
limits = json.loads(sys.argv[1])
for name, value in limits.items():
    resource.setrlimit(getattr(resource, name), tuple(value))
os.execv(sys.executable, [sys.executable, "-I", "-S", "-X", "utf8", sys.argv[2]])
"""


@dataclass
class SandboxResult:
    returncode: int
    stdout_tail: str
    stderr_tail: str
    runtime: str  # "bubblewrap" | "docker" | "unsandboxed"
    duration: float
    killed_reason: str | None = None  # why a limit or the sandbox stopped it, in plain words
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.killed_reason is None

    def to_dict(self) -> dict:
        return asdict(self)


def run_sandboxed(
    script: Path,
    workdir: Path,
    inputs: list[Path],
    *,
    runtime: Runtime = "auto",
    limits: SandboxLimits | None = None,
    allow_unsandboxed: bool = False,
) -> SandboxResult:
    """Run ``script`` with ``workdir`` as its writable folder and ``inputs`` read-only inside it."""
    limits = limits or SandboxLimits()
    chosen = choose_runtime(runtime, allow_unsandboxed=allow_unsandboxed)
    script, workdir = script.resolve(), workdir.resolve()
    inputs = [p.resolve() for p in inputs]
    _check_names(inputs)
    warnings = []
    with tempfile.TemporaryDirectory(prefix="forge-sandbox-") as private:
        private_dir = Path(private)
        if chosen == "unsandboxed":
            command = _unsandboxed_command(script, workdir, inputs, limits)
        else:
            script, *inputs = _readable_for_nobody([script, *inputs], private_dir)
            command = []  # built by run_bubblewrap or run_docker, which also copy the results out
            warnings = [f"The script ran in {chosen} {why}." for why in _shortfalls(chosen)]
        result = _execute(command, script, workdir, inputs, private_dir, limits, chosen)
    result.warnings += warnings
    if chosen == "unsandboxed":
        result.warnings.append(
            "The script ran WITHOUT a sandbox (--allow-unsandboxed): it could read your files and use the network; "
            f"only memory, CPU time and file-size limits applied. To sandbox it, install bubblewrap: {_BWRAP_INSTALL}."
        )
    return result


# ---------------------------------------------------------------- choosing a runtime


def choose_runtime(runtime: Runtime, *, allow_unsandboxed: bool = False) -> str:
    """``bubblewrap``, ``docker`` or ``unsandboxed`` (only with ``allow_unsandboxed``); else a ForgeError."""
    has_bwrap = shutil.which("bwrap") is not None
    shortfalls = bubblewrap_shortfalls() if has_bwrap else []
    if runtime in ("auto", "bubblewrap") and has_bwrap and not shortfalls:
        return "bubblewrap"
    problem = docker_problem() if runtime in ("auto", "docker") else None
    if runtime in ("auto", "docker") and problem is None:
        return "docker"
    if allow_unsandboxed:  # the user accepted less protection: give the most there is
        return "bubblewrap" if runtime in ("auto", "bubblewrap") and has_bwrap else "unsandboxed"
    if runtime in ("auto", "bubblewrap") and shortfalls:
        raise ForgeError(
            f"bubblewrap is installed, but it would run the script {' and '.join(shortfalls)}.",
            fix="Install libseccomp (`sudo apt-get install libseccomp2`) and bubblewrap 0.8 or later; or start "
            "Docker and set `advisor.sandbox: docker`; or, if you trust the script, pass --allow-unsandboxed "
            "(bubblewrap then runs without what is missing).",
            code=ErrorCode.SANDBOX_UNAVAILABLE,
        )
    if runtime == "docker":
        raise ForgeError(
            f"advisor.sandbox is `docker` in forge.yaml, but {problem}, so the script cannot run in a container.",
            fix="Start the Docker engine (e.g. `sudo systemctl start docker`), or set `advisor.sandbox: "
            f"bubblewrap` in forge.yaml and install it: {_BWRAP_INSTALL}.",
            code=ErrorCode.SANDBOX_UNAVAILABLE,
        )
    if runtime == "bubblewrap":
        raise ForgeError(
            "advisor.sandbox is `bubblewrap` in forge.yaml, but `bwrap` is not installed.",
            fix=f"Install it: {_BWRAP_INSTALL}; or, if you trust the script, pass --allow-unsandboxed.",
            code=ErrorCode.SANDBOX_UNAVAILABLE,
        )
    raise ForgeError(
        "Advisor-written scripts run only in a sandbox, and no sandbox is available here: bubblewrap is not "
        f"installed and {problem}.",
        fix=f"Install bubblewrap: {_BWRAP_INSTALL}, or start Docker; or, if you trust the script, pass "
        "--allow-unsandboxed to run it with resource limits only.",
        code=ErrorCode.SANDBOX_UNAVAILABLE,
    )


def bubblewrap_shortfalls() -> list[str]:
    """What this machine's bubblewrap sandbox would lack, in words ("without ..."); empty when complete."""
    from forgellm.advisor import seccomp
    from forgellm.advisor.sandbox_bwrap import bwrap_has_sizes

    missing = []
    if (why := seccomp.unavailable_reason()) is not None:
        missing.append(f"without its system-call filter ({why})")
    if not bwrap_has_sizes():
        missing.append("without a size cap on its folder (bubblewrap before 0.8 has no --size)")
    return missing


def _shortfalls(runtime: str) -> list[str]:
    from forgellm.advisor import seccomp

    if runtime == "bubblewrap":
        return bubblewrap_shortfalls()
    why = seccomp.unavailable_reason()  # Docker's default filter still applies
    return [] if why is None else [f"with Docker's default system-call filter only, not Forge's ({why})"]


def docker_problem() -> str | None:
    """Why the `docker` command cannot run containers here, or None when an engine answers it. (The
    sandbox drives the `docker` command; the runtime, which talks to the engine's API through the SDK,
    asks runtime.engine instead: the advisor package must not import the runtime, which imports training.)"""
    if shutil.which("docker") is None:
        return "the `docker` command is not installed"
    try:
        answer = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=15
        )
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer within 15 s"
    if answer.returncode != 0 or not answer.stdout.strip():
        return "no Docker engine answers (`docker info` failed)"
    return None


# ---------------------------------------------------------------- command lines


def _unsandboxed_command(script: Path, workdir: Path, inputs: list[Path], limits: SandboxLimits) -> list[str]:
    # Copies, not links: a script that writes to its input must not reach the user's data.
    shutil.copy2(script, workdir / SCRIPT_NAME)
    for path in inputs:
        copy = workdir / path.name
        shutil.copytree(path, copy) if path.is_dir() else shutil.copy2(path, copy)
    launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER]
    return [*launcher, json.dumps(limits.rlimits()), str(workdir / SCRIPT_NAME)]


def _check_names(inputs: list[Path]) -> None:
    names = [p.name for p in inputs]
    for name in names:
        if name == SCRIPT_NAME or names.count(name) > 1:
            raise ForgeError(
                f"The input name {name!r} clashes inside the sandbox (with the script or another input).",
                fix="Rename the input file and run the command again.",
                code=ErrorCode.USAGE_INVALID,
            )


def _readable_for_nobody(inputs: list[Path], private_dir: Path) -> list[Path]:
    """As root the script runs as nobody: files only their owner may read are copied for it into a
    folder only root can enter (then bound into the sandbox, which does not see that folder)."""
    if os.geteuid() != 0:
        return inputs
    readable = []
    for path in inputs:
        if path.is_file() and not path.stat().st_mode & 0o004:
            copy = private_dir / "readable" / path.name
            copy.parent.mkdir(exist_ok=True)
            shutil.copy2(path, copy)
            os.chown(copy, NOBODY, NOBODY)
            path = copy
        readable.append(path)
    return readable


# ---------------------------------------------------------------- running and explaining


def _execute(
    command: list[str],
    script: Path,
    workdir: Path,
    inputs: list[Path],
    private_dir: Path,
    limits: SandboxLimits,
    runtime: str,
) -> SandboxResult:
    # Output goes to files, not pipes: a script that prints gigabytes must not fill Forge's memory.
    out_path, err_path = private_dir / "stdout", private_dir / "stderr"
    env = MINIMAL_ENV | {"HOME": str(workdir)} if runtime == "unsandboxed" else None
    started = time.monotonic()
    timed_out, problem, report = False, None, None
    with out_path.open("wb") as out, err_path.open("wb") as err:
        if runtime == "docker":
            from forgellm.advisor.sandbox_docker import run_docker

            process, report, problem = run_docker(script, workdir, inputs, limits, err, private_dir)
            timed_out = bool(report and report["timed_out"])
        elif runtime == "bubblewrap":
            from forgellm.advisor.sandbox_bwrap import run_bubblewrap

            process, timed_out, problem = run_bubblewrap(script, workdir, inputs, limits, out, err)
            command = process.args
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _stop(process, command)
        else:
            process = subprocess.Popen(
                command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                start_new_session=True,
            )  # fmt: skip
            try:
                process.wait(timeout=limits.wall_seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
        if process.returncode is None:
            _stop(process, command)
    if runtime == "unsandboxed":  # the sandboxes counted while copying out; here the folder is the host's
        problem = folder_over_limits(workdir, limits)
    # Docker: the launcher reports the script's status and output (the container's are its own).
    returncode = report["returncode"] if report else process.returncode
    stdout = report["stdout"] if report else _tail(out_path)
    stderr = (report["stderr"] + _tail(err_path))[-TAIL_CHARS:] if report else _tail(err_path)
    reason = explain_stop(returncode, stderr, timed_out=timed_out, limits=limits, runtime=runtime)
    return SandboxResult(
        returncode=returncode,
        stdout_tail=stdout,
        stderr_tail=stderr,
        runtime=runtime,
        duration=time.monotonic() - started,
        killed_reason="; ".join(r for r in (reason, problem) if r) or None,
    )


def folder_over_limits(workdir: Path, limits: SandboxLimits) -> str | None:
    """Why the working folder breaks the file-count or size limit, or None."""
    files = size = 0
    for folder, _, names in os.walk(workdir):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(folder, name)).st_size
    if files > limits.max_files:
        return f"it left more than {limits.max_files:,} files in its folder (the file-count limit)"
    if size > limits.work_bytes:
        return f"it wrote more than {_size(limits.work_bytes)} into its folder (the folder-size limit)"
    return None


def _stop(process: subprocess.Popen, command: list[str]) -> None:
    """Kill everything the script started. bubblewrap's child is the init of the sandbox's process
    namespace: when it dies the kernel kills every process inside and bubblewrap exits after it."""
    import psutil

    try:
        inner = psutil.Process(process.pid).children()
    except psutil.NoSuchProcess:
        inner = []
    for child in inner:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _tail(path: Path) -> str:
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - TAIL_CHARS * 4))
        return handle.read().decode("utf-8", errors="replace")[-TAIL_CHARS:]


# (text in the script's error output, plain explanation); first match per explanation wins.
_STDERR_SIGNS: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("BlockingIOError", "can't start new thread", "Resource temporarily unavailable"),
        "it tried to start more than {max_processes} processes (the process limit)",
    ),
    (("MemoryError", "Cannot allocate memory"), "it needed more than {memory} of memory (the memory limit)"),
    (("File too large",), "it wrote a file larger than {output} (the file-size limit)"),
    (
        (
            "Network is unreachable",
            "Connection refused",
            "name resolution",
            "Name or service not known",
            "No address associated",
            "Cannot assign requested address",
            "Address family not supported",
        ),
        "it tried to use the network, which the sandbox blocks",
    ),
    (("Read-only file system",), "it tried to write outside its folder; everything else is read-only"),
    (("No space left on device",), "it filled its folder ({work}) or its /tmp ({tmp}) (the folder-size limit)"),
    (("Permission denied",), "it tried to open a file it may not read or write"),
    (("Operation not permitted",), "it made a system call the sandbox forbids (Operation not permitted)"),
)
_SIGNALS = {
    signal.SIGXCPU: "it used more than {cpu} s of CPU time (the CPU limit)",
    signal.SIGXFSZ: "it wrote a file larger than {output} (the file-size limit)",
    signal.SIGKILL: "it was killed by the sandbox (CPU time or memory limit)",
}


def explain_stop(returncode: int, stderr: str, *, timed_out: bool, limits: SandboxLimits, runtime: str) -> str | None:
    """Why the script stopped, from its exit status and error output, or None for a normal exit
    or a plain bug in the script (its traceback then says more than we could)."""
    words = {
        "max_processes": limits.max_processes,
        "memory": _size(limits.memory_bytes),
        "output": _size(limits.max_output_bytes),
        "cpu": limits.cpu_seconds,
        "work": _size(limits.work_bytes),
        "tmp": _size(limits.tmp_bytes),
    }
    failed = returncode != 0 or timed_out  # a script that caught an error and went on was not stopped
    reasons = [text.format(**words) for signs, text in _STDERR_SIGNS if failed and any(s in stderr for s in signs)]
    sig = _signal_of(returncode, runtime)
    if sig in _SIGNALS and not timed_out:
        reasons.append(_SIGNALS[sig].format(**words))
    if timed_out:
        reasons.append(f"it ran longer than {limits.wall_seconds:g} s (the wall-clock limit) and was stopped")
    if runtime == "bubblewrap" and returncode == 1 and stderr.startswith("bwrap:"):
        reasons.append(f"the sandbox could not start ({stderr.strip()})")
    if runtime == "docker" and returncode in (125, 126, 127) and not stderr.startswith("Traceback"):
        reasons.append(f"the container could not start ({stderr.strip()[-300:]})")
    return "; ".join(dict.fromkeys(reasons)) or None


def _signal_of(returncode: int, runtime: str) -> int | None:
    if returncode < 0:
        return -returncode
    # bubblewrap and docker report a child killed by signal N as exit status 128 + N.
    if runtime in ("bubblewrap", "docker") and 128 < returncode < 128 + 65:
        return returncode - 128
    return None


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} bytes"
