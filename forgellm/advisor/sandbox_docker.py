"""The Docker sandbox: the bubblewrap sandbox's protections, as far as Docker can give them.

The container runs Forge's own image (``sandbox_image``: this machine's Python and nothing else)
read-only, as ``nobody`` (or the user running Forge), without network, capabilities or new
privileges, with Docker's default system-call filter and Forge's own filter (``seccomp``) stacked
on it, a process limit, a memory limit, and ``/work`` a memory-backed tmpfs of ``work_bytes``
holding the script and its inputs (bound read-only). Docker's own /etc/hosts, /etc/resolv.conf
(the host's name servers) and /etc/hostname are replaced by empty files, /sys by an empty tmpfs,
/dev/shm is as small as /tmp. No host folder is writable inside.

Inside, Forge's launcher (``_LAUNCHER``, the container's first process, which the script cannot
kill: signals from inside a PID namespace to its init are dropped) starts the script with the
same resource limits as bubblewrap, keeps the tails of its output, enforces the wall clock, kills
whatever the script left running, then writes one JSON report line and a tar of /work to its
standard output. Forge unpacks that tar itself, never following a link and counting files and
bytes as it goes (the file-count limit), so the host folder only ever receives regular files,
folders and links-as-links.

The engine must run on this machine (the bound script and inputs are host paths): a remote
``DOCKER_HOST`` cannot see them.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import stat
import subprocess
import tarfile
import threading
from pathlib import Path, PurePosixPath
from typing import IO

from forgellm.advisor import seccomp
from forgellm.advisor.sandbox_limits import MINIMAL_ENV, NOBODY, SANDBOX_DIR, SCRIPT_NAME, TAIL_CHARS, SandboxLimits

# The container's first process (Forge's code): runs the script, then reports and sends /work.
_LAUNCHER = """\
import base64, ctypes, json, os, resource, select, signal, sys, tarfile, time
cfg = json.loads(sys.stdin.readline())
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: the script cannot read this process's memory or files
out_r, out_w = os.pipe()
err_r, err_w = os.pipe()
child = os.fork()
if child == 0:
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0); os.dup2(out_w, 1); os.dup2(err_w, 2)
    os.closerange(3, 1024)
    for name, value in cfg["rlimits"].items():
        resource.setrlimit(getattr(resource, name), tuple(value))
    if cfg["seccomp"]:  # stacked on Docker's filter: a call runs only if both allow it
        program = base64.b64decode(cfg["seccomp"])
        class Prog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
        if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(Prog(len(program) // 8, program)), 0, 0):
            os.write(2, b"forge: the system-call filter could not be installed\\n"); os._exit(126)
    os.execve(sys.executable, [sys.executable, "-I", "-S", "-X", "utf8", cfg["script"]], cfg["env"])
os.close(out_w); os.close(err_w)
tails, keep = {out_r: b"", err_r: b""}, cfg["tail_bytes"]
def drain(fd):
    data = os.read(fd, 65536)
    tails[fd] = (tails[fd] + data)[-keep:]
    return bool(data)
watch = os.pidfd_open(child)
deadline = time.monotonic() + cfg["wall_seconds"]
timed_out, streams = False, [out_r, err_r]
while True:
    left = deadline - time.monotonic()
    ready = select.select([watch, *streams], [], [], max(left, 0))[0] if left > 0 else []
    if not ready:
        timed_out = True
        break
    for fd in ready:
        if fd != watch and not drain(fd):
            streams.remove(fd)
    if watch in ready:
        break
code, stop = -signal.SIGKILL, time.monotonic() + 10
while time.monotonic() < stop:
    try:
        os.kill(-1, signal.SIGKILL)  # everything but this process (PID 1)
    except ProcessLookupError:
        pass
    try:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
        if pid:
            continue
    except ChildProcessError:
        break
    time.sleep(0.02)
for fd in streams:
    os.set_blocking(fd, False)
    try:
        while drain(fd):
            pass
    except BlockingIOError:
        pass
code = 128 + signal.SIGKILL if timed_out else (128 - code if code < 0 else code)
report = {"returncode": code, "timed_out": timed_out}
report |= {"stdout": base64.b64encode(tails[out_r]).decode(), "stderr": base64.b64encode(tails[err_r]).decode()}
out = os.fdopen(1, "wb")
out.write(json.dumps(report).encode() + b"\\n")
skip = set(cfg["skip"])
with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
    for folder, dirs, names in os.walk(".", followlinks=False):
        if folder == ".":
            dirs[:] = [d for d in dirs if d not in skip]
            names = [n for n in names if n not in skip]
        for name in [*dirs, *names]:
            try:
                tar.add(os.path.join(folder, name), recursive=False)
            except OSError:
                pass  # unreadable: the script's own doing, it is simply not copied
out.flush()
os._exit(code)
"""


def docker_command(
    script: Path, inputs: list[Path], limits: SandboxLimits, *, name: str, image: str, empty_file: Path
) -> list[str]:
    uid, gid = (NOBODY, NOBODY) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    # tmpfs pages count towards the container's memory: its limit covers the folder and /tmp too,
    # while each process stays under memory_bytes (RLIMIT_AS, set by the launcher).
    memory = str(limits.memory_bytes + limits.work_bytes + 2 * limits.tmp_bytes)
    command = ["docker", "run", "--rm", "-i", "--name", name, "--hostname", "sandbox", "--log-driver", "none"]
    command += ["--network", "none", "--read-only", "--user", f"{uid}:{gid}"]
    command += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    command += ["--memory", memory, "--memory-swap", memory, "--cpus", "1"]
    command += ["--pids-limit", str(limits.max_processes + 1)]  # + the launcher
    command += ["--shm-size", str(limits.tmp_bytes)]
    command += ["--tmpfs", f"/tmp:rw,nosuid,nodev,size={limits.tmp_bytes},mode=1777"]
    command += ["--tmpfs", f"{SANDBOX_DIR}:rw,nosuid,nodev,size={limits.work_bytes},uid={uid},gid={gid},mode=0700"]
    command += ["--tmpfs", "/sys:ro,size=4k"]  # the host's devices and cgroups: nothing a script needs
    for docker_file in ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname"):  # Docker's copies name host servers
        command += _mount("bind", f"source={empty_file}", f"target={docker_file}")
    command += _mount("bind", f"source={script}", f"target={SANDBOX_DIR}/{SCRIPT_NAME}")
    for path in inputs:
        command += _mount("bind", f"source={path}", f"target={SANDBOX_DIR}/{path.name}")
    for hidden in _hidden_inside(inputs):
        command += _mount("tmpfs", f"target={hidden}", "tmpfs-size=4096")
    command += ["-w", SANDBOX_DIR, image]
    from forgellm.advisor.sandbox_image import python_path

    return [*command, str(python_path()), "-I", "-S", "-c", _LAUNCHER]


def _mount(kind: str, *fields: str) -> list[str]:
    """A read-only ``--mount``; its fields CSV-quoted, so paths with commas or colons stay whole."""
    line = io.StringIO()
    csv.writer(line).writerow([f"type={kind}", *fields, "readonly"])
    return ["--mount", line.getvalue().rstrip("\r\n")]


def _hidden_inside(inputs: list[Path]) -> list[str]:
    from forgellm.advisor.sandbox_bwrap import _hidden_inside as hidden_inside

    return hidden_inside([(str(p), f"{SANDBOX_DIR}/{p.name}") for p in inputs])


def launcher_config(inputs: list[Path], limits: SandboxLimits) -> dict:
    program = seccomp.filter_program() if seccomp.unavailable_reason() is None else b""
    return {
        "script": f"{SANDBOX_DIR}/{SCRIPT_NAME}",
        "env": dict(MINIMAL_ENV),
        "rlimits": limits.rlimits(),
        "wall_seconds": limits.wall_seconds,
        "tail_bytes": TAIL_CHARS * 4,
        "seccomp": base64.b64encode(program).decode(),
        "skip": [SCRIPT_NAME, *(p.name for p in inputs)],  # bound from the host, not written by the script
    }


def run_docker(
    script: Path, workdir: Path, inputs: list[Path], limits: SandboxLimits, err: IO[bytes], private_dir: Path
):
    """Run the container; returns (process, report or None, problem or None). The report holds
    the script's exit status, whether the wall clock stopped it, and the tails of its output."""
    from forgellm.advisor.sandbox_image import ensure_image

    image = ensure_image()
    empty = private_dir / "empty"
    empty.touch()
    empty.chmod(0o444)
    name = f"forge-script-{os.urandom(6).hex()}"
    command = docker_command(script, inputs, limits, name=name, image=image, empty_file=empty)
    process = subprocess.Popen(
        command, cwd="/", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, start_new_session=True
    )
    assert process.stdin is not None and process.stdout is not None
    # The launcher keeps the wall clock; this only covers an engine that hangs (start-up, unpacking).
    watchdog = threading.Timer(limits.wall_seconds + 60, _kill, args=(name, process))
    watchdog.start()
    try:
        try:
            process.stdin.write(json.dumps(launcher_config(inputs, limits)).encode() + b"\n")
            process.stdin.close()
        except BrokenPipeError:
            pass  # the container did not start: docker's error output says why
        line = process.stdout.readline(1 << 20)
        try:
            report = json.loads(line)
        except ValueError:
            return process, None, None
        report["stdout"] = base64.b64decode(report["stdout"]).decode("utf-8", errors="replace")
        report["stderr"] = base64.b64decode(report["stderr"]).decode("utf-8", errors="replace")
        problem = unpack(process.stdout, workdir, limits)
        if problem is not None:
            _kill(name, process)
        return process, report, problem
    finally:
        process.stdout.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _kill(name, process)
        watchdog.cancel()


def _kill(name: str, process: subprocess.Popen) -> None:
    subprocess.run(["docker", "kill", name], capture_output=True, timeout=30)
    process.kill()


def unpack(stream: IO[bytes], workdir: Path, limits: SandboxLimits) -> str | None:
    """Unpack the container's tar of /work into ``workdir``: only folders, regular files and links
    (written as links, never followed), no name leaving the folder or passing through a link;
    returns why it stopped (the file-count or size limit, a damaged archive), or None."""
    files = size = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if not parts or parts[0] == "/" or ".." in parts or _through_link(workdir, parts):
                    continue
                if parts == (".",):
                    continue
                target = workdir.joinpath(*parts)
                if member.isdir():
                    target.mkdir(exist_ok=True)
                    continue
                if not (member.isreg() or member.issym()):
                    continue  # devices, fifos, hard links: nothing a conversion leaves
                files += 1
                if files > limits.max_files:
                    return f"it left more than {limits.max_files:,} files in its folder (the file-count limit)"
                if member.issym():
                    os.symlink(member.linkname, target)
                    continue
                size += _write(tar.extractfile(member), target)
                if size > limits.work_bytes:
                    return f"it wrote more than {limits.work_bytes:,} bytes into its folder (the folder-size limit)"
    except (tarfile.TarError, OSError) as exc:
        return f"its folder could not be copied out of the container ({exc})"
    return None


def _through_link(workdir: Path, parts: tuple[str, ...]) -> bool:
    here = workdir
    for part in parts[:-1]:
        here = here / part
        try:
            if not stat.S_ISDIR(os.lstat(here).st_mode):
                return True
        except FileNotFoundError:
            return True  # its folder was not sent first: not from Forge's launcher
    return False


def _write(source: IO[bytes] | None, target: Path) -> int:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    written = 0
    with os.fdopen(fd, "wb") as out:
        while source is not None and (chunk := source.read(1024 * 1024)):
            out.write(chunk)
            written += len(chunk)
    return written
