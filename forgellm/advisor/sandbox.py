"""Run an advisor-written script where it cannot hurt: bubblewrap on Linux, or a Docker container.

The script sees a read-only system, its own folder (``/work``, the only writable place) with its
inputs bound read-only inside, no network, no home directories, no credentials and an empty
environment. Limits: memory, CPU time, size of each written file, number of processes, wall time.

Two facts of Linux shape the bubblewrap mode:
- RLIMIT_NPROC counts processes per user and is ignored for root. For a normal user the limit is set
  inside bubblewrap's user namespace, where it counts only the sandbox's processes. When Forge runs
  as root, bubblewrap runs without a user namespace and the script drops to ``nobody`` (uid 65534)
  before it starts, so the limit applies and root-only files (/etc/shadow) stay unreadable.
- The limits are set by a few lines of Python run inside the sandbox just before the script
  (``_LAUNCHER``), so they bind the script and its children but not bubblewrap itself.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from forgellm.errors import ErrorCode, ForgeError

Runtime = Literal["auto", "bubblewrap", "docker"]
NOBODY = 65534
SANDBOX_DIR = "/work"  # where the script's folder appears inside the sandbox
SCRIPT_NAME = "script.py"
DOCKER_IMAGE = "python:3.12-slim"
_TAIL_CHARS = 4000
_GIB = 1024**3
# Host folders replaced by an empty read-only tmpfs: homes (SSH keys, cloud credentials), runtime
# sockets and mounted secrets, scratch space of other programs.
_HIDDEN_DIRS = ("/root", "/home", "/run", "/var/run", "/var/tmp", "/mnt", "/media", "/srv", "/var/run/secrets")
_MINIMAL_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": SANDBOX_DIR}
_BWRAP_INSTALL = "`sudo apt-get install bubblewrap` (or `sudo dnf install bubblewrap`)"

# Runs inside the sandbox, before the script: set the limits, drop root, then become the script.
_LAUNCHER = """\
import json, os, resource, sys
limits = json.loads(sys.argv[1])
uid = limits.pop("drop_to_uid", None)
if uid is not None and os.getuid() == 0:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
for name, value in limits.items():
    resource.setrlimit(getattr(resource, name), tuple(value))
os.execv(sys.executable, [sys.executable, "-I", "-S", "-X", "utf8", sys.argv[2]])
"""


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: int = 60
    wall_seconds: float = 120.0
    memory_bytes: int = 2 * _GIB  # address space of each process
    max_processes: int = 64
    max_output_bytes: int = 2 * _GIB  # largest file the script may write
    tmp_bytes: int = 256 * 1024**2  # size of its private /tmp (memory-backed)

    def rlimits(self) -> dict[str, list[int]]:
        # The hard CPU limit one second later turns an ignored SIGXCPU into SIGKILL.
        return {
            "RLIMIT_AS": [self.memory_bytes, self.memory_bytes],
            "RLIMIT_CPU": [self.cpu_seconds, self.cpu_seconds + 1],
            "RLIMIT_FSIZE": [self.max_output_bytes, self.max_output_bytes],
            "RLIMIT_NPROC": [self.max_processes, self.max_processes],
            "RLIMIT_CORE": [0, 0],
        }


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
    with tempfile.TemporaryDirectory(prefix="forge-sandbox-") as private:
        private_dir = Path(private)
        if chosen == "unsandboxed":
            command = _unsandboxed_command(script, workdir, inputs, limits)
        else:
            script, *inputs = _readable_for_nobody([script, *inputs], private_dir)
            command = (
                bubblewrap_command(script, workdir, inputs, limits)
                if chosen == "bubblewrap"
                else docker_command(script, workdir, inputs, limits, name=f"forge-script-{uuid.uuid4().hex[:12]}")
            )
        as_root = os.geteuid() == 0 and chosen != "unsandboxed"
        if as_root:  # the script runs as nobody: its folder must be writable by nobody
            os.chown(workdir, NOBODY, NOBODY)
        try:
            result = _execute(command, workdir, private_dir, limits, chosen)
        finally:
            if as_root:
                _give_back(workdir)
    if chosen == "unsandboxed":
        result.warnings.append(
            "The script ran WITHOUT a sandbox (--allow-unsandboxed): it could read your files and use the network; "
            f"only memory, CPU time and file-size limits applied. To sandbox it, install bubblewrap: {_BWRAP_INSTALL}."
        )
    return result


# ---------------------------------------------------------------- choosing a runtime


def choose_runtime(runtime: Runtime, *, allow_unsandboxed: bool = False) -> str:
    """``bubblewrap``, ``docker`` or ``unsandboxed`` (only with ``allow_unsandboxed``); else a ForgeError."""
    if runtime in ("auto", "bubblewrap") and shutil.which("bwrap") is not None:
        return "bubblewrap"
    problem = docker_problem() if runtime in ("auto", "docker") else None
    if runtime in ("auto", "docker") and problem is None:
        return "docker"
    if allow_unsandboxed:
        return "unsandboxed"
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


def docker_problem() -> str | None:
    """Why Docker cannot run containers here, or None when an engine answers."""
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


def bubblewrap_command(script: Path, workdir: Path, inputs: list[Path], limits: SandboxLimits) -> list[str]:
    as_root = os.geteuid() == 0
    python = Path(sys.executable).resolve()
    hidden = _hidden_dirs()
    command = ["bwrap", *_root_view(hidden)]
    # The interpreter may live under a hidden home (pyenv, a venv): show just its installation again.
    for needed in sorted({python.parent.parent, Path(sys.base_prefix).resolve()}):
        command += _reexpose(needed, hidden)
    command += [arg for d in hidden for arg in ("--remount-ro", d)]
    if as_root:  # no user namespace: see the module docstring
        command += ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        command += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        command += ["--unshare-all", "--unshare-user"]
    command += ["--die-with-parent", "--new-session", "--dev", "/dev", "--proc", "/proc"]
    # A small /tmp that nobody may write to: bubblewrap < 0.8 has neither option (its /tmp is unbounded).
    command += ["--perms", "1777", "--size", str(limits.tmp_bytes)] if _bwrap_has_sizes() else []
    command += ["--tmpfs", "/tmp"]
    command += ["--bind", str(workdir), SANDBOX_DIR, "--ro-bind", str(script), f"{SANDBOX_DIR}/{SCRIPT_NAME}"]
    for path in inputs:
        command += ["--ro-bind", str(path), f"{SANDBOX_DIR}/{path.name}"]
    # The root itself is bubblewrap's tmpfs: read-only once every mount point is made.
    command += ["--remount-ro", "/", "--chdir", SANDBOX_DIR, "--clearenv"]
    command += [arg for name, value in _MINIMAL_ENV.items() for arg in ("--setenv", name, value)]
    rlimits = {**limits.rlimits(), **({"drop_to_uid": NOBODY} if as_root else {})}
    return [*command, str(python), "-I", "-S", "-c", _LAUNCHER, json.dumps(rlimits), f"{SANDBOX_DIR}/{SCRIPT_NAME}"]


@functools.lru_cache(maxsize=1)
def _bwrap_has_sizes() -> bool:
    """Whether this bubblewrap takes --size and --perms for a tmpfs or a folder (0.8 and later)."""
    usage = subprocess.run(["bwrap", "--help"], capture_output=True, text=True, timeout=10)
    return "--size" in usage.stdout + usage.stderr


def _root_view(hidden: list[str]) -> list[str]:
    """The host's top-level folders, read-only, on bubblewrap's own root, so /work can be created
    there; hidden folders become empty read-only tmpfs, /dev /proc /tmp are made fresh later."""
    args: list[str] = []
    fresh = {"/dev", "/proc", "/tmp", SANDBOX_DIR}
    for entry in sorted(os.scandir("/"), key=lambda e: e.name):
        path = "/" + entry.name
        if path in fresh or path in hidden:
            continue
        if entry.is_symlink():
            args += ["--symlink", os.readlink(path), path]
        elif entry.is_dir():
            args += ["--ro-bind", path, path]
    return [*args, *(arg for d in hidden for arg in ("--tmpfs", d))]


def docker_command(script: Path, workdir: Path, inputs: list[Path], limits: SandboxLimits, *, name: str) -> list[str]:
    user = f"{NOBODY}:{NOBODY}" if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}"
    memory = str(limits.memory_bytes)
    command = ["docker", "run", "--rm", "--name", name, "--network", "none", "--read-only"]
    command += ["--tmpfs", f"/tmp:rw,size={limits.tmp_bytes}", "--memory", memory, "--memory-swap", memory]
    command += ["--pids-limit", str(limits.max_processes), "--cpus", "1", "--user", user]
    command += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    command += ["--ulimit", f"cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}"]
    command += ["--ulimit", f"fsize={limits.max_output_bytes}:{limits.max_output_bytes}"]
    command += ["-v", f"{workdir}:{SANDBOX_DIR}:rw", "-v", f"{script}:{SANDBOX_DIR}/{SCRIPT_NAME}:ro"]
    for path in inputs:
        command += ["-v", f"{path}:{SANDBOX_DIR}/{path.name}:ro"]
    command += ["-w", SANDBOX_DIR, "-e", f"HOME={SANDBOX_DIR}", DOCKER_IMAGE]
    return [*command, "python", "-I", "-X", "utf8", f"{SANDBOX_DIR}/{SCRIPT_NAME}"]


def _unsandboxed_command(script: Path, workdir: Path, inputs: list[Path], limits: SandboxLimits) -> list[str]:
    # Copies, not links: a script that writes to its input must not reach the user's data.
    shutil.copy2(script, workdir / SCRIPT_NAME)
    for path in inputs:
        copy = workdir / path.name
        shutil.copytree(path, copy) if path.is_dir() else shutil.copy2(path, copy)
    launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER]
    return [*launcher, json.dumps(limits.rlimits()), str(workdir / SCRIPT_NAME)]


def _hidden_dirs() -> list[str]:
    """Existing real folders to hide, outermost only (a tmpfs over a parent already hides the rest)."""
    from forgellm.config.settings import forge_home

    wanted = [*_HIDDEN_DIRS, os.path.expanduser("~"), str(forge_home())]
    found = [os.path.realpath(d) for d in wanted if os.path.isdir(d) and not os.path.islink(d)]
    unique = sorted(set(found))
    covers = [*unique, "/tmp"]  # /tmp is replaced by a fresh tmpfs anyway
    return [d for d in unique if not any(Path(other) in Path(d).parents for other in covers)]


def _reexpose(path: Path, hidden: list[str]) -> list[str]:
    """Bind ``path`` back under the hidden folder that covers it, with traversable parents."""
    cover = next((Path(d) for d in hidden if path != Path(d) and Path(d) in path.parents), None)
    if cover is None:
        return []
    args: list[str] = []
    for parent in reversed(path.parents):
        if cover in parent.parents:  # bubblewrap would create these 0700: nobody could enter
            args += [*(["--perms", "0755"] if _bwrap_has_sizes() else []), "--dir", str(parent)]
    return [*args, "--ro-bind", str(path), str(path)]


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


def _give_back(workdir: Path) -> None:
    """Files the script wrote as nobody go back to the user running Forge."""
    for folder, dirs, files in os.walk(workdir):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(folder, name), os.getuid(), os.getgid())
    os.chown(workdir, os.getuid(), os.getgid())


# ---------------------------------------------------------------- running and explaining


def _execute(
    command: list[str], workdir: Path, private_dir: Path, limits: SandboxLimits, runtime: str
) -> SandboxResult:
    # Output goes to files, not pipes: a script that prints gigabytes must not fill Forge's memory.
    out_path, err_path = private_dir / "stdout", private_dir / "stderr"
    env = _MINIMAL_ENV | {"HOME": str(workdir)} if runtime == "unsandboxed" else None
    started = time.monotonic()
    timed_out = False
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(
            command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, start_new_session=True
        )
        try:
            process.wait(timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
            _stop(process, command)
    stderr = _tail(err_path)
    reason = explain_stop(process.returncode, stderr, timed_out=timed_out, limits=limits, runtime=runtime)
    return SandboxResult(
        returncode=process.returncode,
        stdout_tail=_tail(out_path),
        stderr_tail=stderr,
        runtime=runtime,
        duration=time.monotonic() - started,
        killed_reason=reason,
    )


def _stop(process: subprocess.Popen, command: list[str]) -> None:
    """Kill everything the script started. bubblewrap's child is the init of the sandbox's process
    namespace: when it dies the kernel kills every process inside and bubblewrap exits after it."""
    import psutil

    if command[:2] == ["docker", "run"]:  # the container outlives a killed client
        subprocess.run(["docker", "kill", command[command.index("--name") + 1]], capture_output=True, timeout=30)
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
        handle.seek(max(0, path.stat().st_size - _TAIL_CHARS * 4))
        return handle.read().decode("utf-8", errors="replace")[-_TAIL_CHARS:]


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
        ),
        "it tried to use the network, which the sandbox blocks",
    ),
    (("Read-only file system",), "it tried to write outside its folder; everything else is read-only"),
    (("PermissionError", "Permission denied"), "it tried to open a file it may not read or write"),
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
