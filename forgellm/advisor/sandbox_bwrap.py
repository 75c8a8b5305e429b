"""The bubblewrap sandbox: a root made of only what the script needs, a capped working folder,
a system-call filter, and a launcher that keeps the sandbox open until its results are copied out.

What the script sees: the Python interpreter and its standard library, the system's shared
libraries (/usr/lib, /lib*) and /etc/ld.so.cache, a fresh /dev, /proc and small /tmp, and ``/work``:
a memory-backed tmpfs of ``work_bytes`` holding its inputs (read-only) and the script. Nothing else
of the host exists inside (no /etc/passwd, /opt, /var, /home, other Python packages). No
/etc/localtime on purpose: times are UTC inside, so the output does not depend on the host's zone.

The working folder is a tmpfs, so its size is a hard kernel limit; the kernel has no file-count
limit that bubblewrap can set (tmpfs ``nr_inodes`` is not among its options), so the files are
counted when they are copied out, and a run that left more than ``max_files`` is refused.

Copying out: when the script ends, the launcher (``_LAUNCHER``, Forge's code, first process inside)
kills everything the script left running, tells Forge, and waits. Forge then reads the sandbox's
/work through ``/proc/<pid>/root`` with file descriptors that never follow a link (the script
cannot redirect the copy to a host file), and finally lets the launcher exit. No host folder is
ever writable inside the sandbox.

Running as root: bubblewrap runs without a user namespace and the script drops to ``nobody``
before it starts, so RLIMIT_NPROC applies (it is ignored for root). As a normal user the limits are
set inside bubblewrap's user namespace, where they count only the sandbox's processes.
"""

from __future__ import annotations

import functools
import json
import os
import select
import stat
import subprocess
import sys
import time
from pathlib import Path

from forgellm.advisor import seccomp
from forgellm.advisor.sandbox_limits import (
    MINIMAL_ENV,
    NOBODY,
    SANDBOX_DIR,
    SCRIPT_NAME,
    SandboxLimits,
)

# Host folders that must stay hidden even when they lie inside something bound (an input folder,
# the interpreter's installation): homes, credentials, runtime sockets, mounted secrets.
_HIDDEN_DIRS = ("/root", "/home", "/run", "/var/run", "/var/tmp", "/mnt", "/media", "/srv", "/var/run/secrets")
_SYSTEM_LIBS = ("/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libx32")
_TOP_LIBS = ("/lib", "/lib32", "/lib64", "/libx32")
_LOADER_FILES = ("/etc/ld.so.cache",)  # the dynamic loader's index of /usr/lib, nothing personal

# First process inside the sandbox (Forge's code): starts the script with its limits, enforces the
# wall clock, kills whatever it left running, reports, and waits until Forge has copied /work.
_LAUNCHER = """\
import ctypes, json, os, resource, select, signal, sys, time
cfg = json.loads(sys.argv[1])
ready, go = cfg["ready_fd"], cfg["go_fd"]
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: the script cannot reach into this process
child = os.fork()
if child == 0:
    os.close(ready); os.close(go)
    if cfg["drop_to_uid"] is not None and os.getuid() == 0:
        os.setgroups([]); os.setgid(cfg["drop_to_uid"]); os.setuid(cfg["drop_to_uid"])
    for name, value in cfg["rlimits"].items():
        resource.setrlimit(getattr(resource, name), tuple(value))
    os.execv(sys.executable, [sys.executable, "-I", "-S", "-X", "utf8", sys.argv[2]])
def running(pid):  # a process still there and not a zombie; one that vanished while we looked is gone
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return not stat.read().rsplit(")", 1)[1].startswith(" Z")
    except OSError:
        return False
watch = os.pidfd_open(child)
timed_out = not select.select([watch], [], [], cfg["wall_seconds"])[0]
deadline, code = time.monotonic() + 10, -signal.SIGKILL
while time.monotonic() < deadline:
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
    if not [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid()) and running(p)]:
        break
    time.sleep(0.02)
code = 128 + signal.SIGKILL if timed_out else (128 - code if code < 0 else code)
os.write(ready, json.dumps({"timed_out": timed_out, "returncode": code}).encode())
os.close(ready)
os.read(go, 1)
os._exit(code)
"""


def bubblewrap_command(
    script: Path, inputs: list[Path], limits: SandboxLimits, *, seccomp_fd: int | None, info_fd: int, launcher: dict
) -> list[str]:
    as_root = os.geteuid() == 0
    sized = bwrap_has_sizes()
    command = ["bwrap"]
    binds = _system_binds() + _interpreter_binds()
    for folder in _parents_to_make([dest for _, dest in binds]):  # made 0755: nobody must be able to enter
        command += [*(["--perms", "0755"] if sized else []), "--dir", folder]
    for source, dest in binds:
        command += ["--ro-bind", source, dest]
    for link, target in _top_level_links():
        command += ["--symlink", target, link]
    if as_root:  # no user namespace: see the module docstring
        command += ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        command += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_KILL"]
    else:
        command += ["--unshare-all", "--unshare-user"]
    command += ["--die-with-parent", "--new-session", "--dev", "/dev", "--proc", "/proc"]
    command += ["--perms", "1777", "--size", str(limits.tmp_bytes)] if sized else []
    command += ["--tmpfs", "/tmp"]
    # The working folder: writable by the script (nobody, when Forge runs as root), capped in size.
    command += ["--perms", "0777" if as_root else "0755", "--size", str(limits.work_bytes)] if sized else []
    command += ["--tmpfs", SANDBOX_DIR, "--ro-bind", str(script), f"{SANDBOX_DIR}/{SCRIPT_NAME}"]
    for path in inputs:
        command += ["--ro-bind", str(path), f"{SANDBOX_DIR}/{path.name}"]
    shown = [*binds, *((str(p), f"{SANDBOX_DIR}/{p.name}") for p in inputs)]
    for hidden in [*_hidden_inside(shown), *_package_folders(binds)]:
        command += ["--tmpfs", hidden, "--remount-ro", hidden]
    # The root itself is bubblewrap's tmpfs: read-only once every mount point is made.
    command += ["--remount-ro", "/", "--chdir", SANDBOX_DIR, "--clearenv", "--info-fd", str(info_fd)]
    command += ["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []
    command += [arg for name, value in MINIMAL_ENV.items() for arg in ("--setenv", name, value)]
    config = {**launcher, "rlimits": limits.rlimits(), "wall_seconds": limits.wall_seconds}
    config["drop_to_uid"] = NOBODY if as_root else None
    python = str(Path(sys.executable).resolve())
    return [*command, python, "-I", "-S", "-c", _LAUNCHER, json.dumps(config), f"{SANDBOX_DIR}/{SCRIPT_NAME}"]


@functools.lru_cache(maxsize=1)
def bwrap_has_sizes() -> bool:
    """Whether this bubblewrap takes --size and --perms for a tmpfs or a folder (0.8 and later)."""
    usage = subprocess.run(["bwrap", "--help"], capture_output=True, text=True, timeout=10)
    return "--size" in usage.stdout + usage.stderr


def _system_binds() -> list[tuple[str, str]]:
    paths = [*_SYSTEM_LIBS, *_TOP_LIBS, *_LOADER_FILES]
    return [(p, p) for p in paths if os.path.exists(p) and not os.path.islink(p)]


def _top_level_links() -> list[tuple[str, str]]:
    """/lib -> usr/lib and the like on merged-/usr systems: recreated as links inside."""
    return [(p, os.readlink(p)) for p in _TOP_LIBS if os.path.islink(p)]


def _interpreter_binds() -> list[tuple[str, str]]:
    """The interpreter, its standard library (the sys.path entries of ``python -I -S``) and its own
    shared libraries (libpython of a pyenv or custom build), each at its real path."""
    prefixes = {Path(sys.base_prefix).resolve(), Path(sys.base_exec_prefix).resolve()}
    wanted = {Path(sys.executable).resolve()}
    for entry in sys.path:
        path = Path(entry).resolve() if entry else None
        if path and path.exists() and "site-packages" not in path.parts and prefixes & set(path.parents):
            wanted.add(path)
    for prefix in prefixes:
        wanted.update(p.resolve() for p in prefix.glob("lib/libpython*.so*"))
    covered = [p for p in wanted if not any(other in p.parents for other in wanted)]
    return [(str(p), str(p)) for p in sorted(covered)]


def _package_folders(binds: list[tuple[str, str]]) -> list[str]:
    """Installed packages inside the bound library folders (the base interpreter's site-packages, Debian's
    dist-packages): emptied, because scripts may use the standard library only, and hundreds of MB of
    third-party code are attack surface and a view of what this machine runs."""
    found = set()
    for _, dest in binds:
        root = Path(dest)
        if root.is_dir():
            for pattern in ("site-packages", "dist-packages", "python3*/site-packages", "python3*/dist-packages"):
                found.update(str(p) for p in root.glob(pattern) if p.is_dir() and not p.is_symlink())
    return sorted(found)


def _parents_to_make(dests: list[str]) -> list[str]:
    made: list[str] = []
    for dest in dests:
        for parent in reversed(Path(dest).parents):
            if str(parent) != "/" and str(parent) not in made:
                made.append(str(parent))
    return made


def _hidden_inside(shown: list[tuple[str, str]]) -> list[str]:
    """Where, inside the sandbox, a secret folder would appear because something bound contains it
    (FORGE_HOME or a home inside an input folder): those places get an empty read-only tmpfs."""
    from forgellm.config.settings import forge_home

    secret = {os.path.realpath(d) for d in [*_HIDDEN_DIRS, os.path.expanduser("~"), str(forge_home())]}
    places = []
    for source, dest in shown:
        for folder in sorted(secret):
            if os.path.isdir(folder) and Path(source) in Path(folder).parents:
                places.append(str(Path(dest) / Path(folder).relative_to(source)))
    return sorted(set(places))


# ---------------------------------------------------------------- running and copying out


def run_bubblewrap(script: Path, workdir: Path, inputs: list[Path], limits: SandboxLimits, out, err):
    """Run the sandbox; returns (returncode, timed_out, copy problem or None)."""
    seccomp_fd = seccomp.filter_fd() if seccomp.unavailable_reason() is None else None
    info_r, info_w = os.pipe()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    launcher = {"ready_fd": ready_w, "go_fd": go_r}
    command = bubblewrap_command(script, inputs, limits, seccomp_fd=seccomp_fd, info_fd=info_w, launcher=launcher)
    inherited = [fd for fd in (seccomp_fd, info_w, ready_w, go_r) if fd is not None]
    try:
        process = subprocess.Popen(
            command, cwd="/", stdin=subprocess.DEVNULL, stdout=out, stderr=err, pass_fds=inherited,
            start_new_session=True,
        )  # fmt: skip
    finally:
        for fd in inherited:
            os.close(fd)
    try:
        # The launcher enforces the wall clock; this margin only covers a launcher the script stopped.
        report = _read_all(ready_r, limits.wall_seconds + 15)
        if report is None:
            return process, True, None
        status = json.loads(report) if report else None
        problem = None
        if status is not None:
            info = json.loads(_read_all(info_r, 5) or "{}")
            problem = copy_out(Path(f"/proc/{info['child-pid']}/root{SANDBOX_DIR}"), workdir, inputs, limits)
        return process, bool(status and status["timed_out"]), problem
    finally:
        os.close(go_w)  # the launcher exits, and the sandbox with it
        for fd in (info_r, ready_r):
            os.close(fd)


def _read_all(fd: int, timeout: float) -> bytes | None:
    """Everything written to ``fd`` until its writers close it, or None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return data
        data += chunk
        if data.rstrip().endswith(b"}"):  # one JSON object: no need to wait for every writer to close
            return data


def copy_out(source: Path, workdir: Path, inputs: list[Path], limits: SandboxLimits) -> str | None:
    """Copy the sandbox's /work into ``workdir`` without following any link (each step opens the
    next name relative to its folder with O_NOFOLLOW); returns why the copy stopped, or None."""
    skip = {SCRIPT_NAME, *(p.name for p in inputs)}  # bound from the host, not written by the script
    files = size = 0
    root_fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for folder, dirs, names, dir_fd in os.fwalk(".", dir_fd=root_fd, follow_symlinks=False):
            target = workdir / folder
            if folder == ".":
                dirs[:] = [d for d in dirs if d not in skip]
                names = [n for n in names if n not in skip]
            for name in dirs:
                (target / name).mkdir(exist_ok=True)
            for name in names:
                files += 1
                if files > limits.max_files:
                    return f"it left more than {limits.max_files:,} files in its folder (the file-count limit)"
                size += _copy_one(name, dir_fd, target / name)
                if size > limits.work_bytes:
                    return f"it wrote more than {limits.work_bytes:,} bytes into its folder (the folder-size limit)"
    finally:
        os.close(root_fd)
    return None


def _copy_one(name: str, dir_fd: int, target: Path) -> int:
    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(info.st_mode):  # kept as a link (never read): Forge refuses links as output
        os.symlink(os.readlink(name, dir_fd=dir_fd), target)
        return 0
    if not stat.S_ISREG(info.st_mode):
        return 0
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    copied = 0
    with os.fdopen(fd, "rb") as source, target.open("wb") as out:
        while chunk := source.read(1024 * 1024):
            out.write(chunk)
            copied += len(chunk)
    return copied
