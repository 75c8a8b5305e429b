"""What only the Docker sandbox has, checked on a real engine: the container's configuration as the
engine reports it, the script's privileges seen from inside, the memory limit across processes
(a cgroup), Forge's system-call filter stacked on Docker's, and the image Forge builds itself.

The hostile scripts themselves run in both sandboxes in test_sandbox.py and test_sandbox_hardening.py.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import threading
import time
from dataclasses import replace

import pytest

from advisor.sandbox_support import FAST, make_job
from forgellm.advisor import sandbox, sandbox_docker, sandbox_image, seccomp

NOBODY = 65534
# A real engine: with the Docker variants of the other sandbox tests, ~40 s in all (make test, not test-fast).
ENGINE = pytest.mark.slow


@pytest.fixture
def djob(tmp_path, docker_engine):
    return make_job(tmp_path, runtime="docker")


def _inspect_running(found: list[dict], stop: threading.Event) -> None:
    """The engine's record of the sandbox's container, read while it runs."""
    while not stop.is_set() and not found:
        names = subprocess.run(
            ["docker", "ps", "-q", "--filter", "name=forge-script-"], capture_output=True, text=True
        ).stdout.split()
        if names:
            answer = subprocess.run(["docker", "inspect", names[0]], capture_output=True, text=True)
            if answer.returncode == 0:
                found.extend(json.loads(answer.stdout))
        time.sleep(0.05)


@ENGINE
def test_the_engine_runs_the_container_locked_down(djob):
    found: list[dict] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_inspect_running, args=(found, stop))
    watcher.start()
    try:
        result = djob("import time\ntime.sleep(3)\n")
    finally:
        stop.set()
        watcher.join()
    assert result.ok and found, result
    host, config = found[0]["HostConfig"], found[0]["Config"]
    assert config["User"] == (f"{NOBODY}:{NOBODY}" if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}")
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True and host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["SecurityOpt"] == ["no-new-privileges"]  # and no "seccomp=unconfined": Docker's filter applies
    assert host["PidsLimit"] == FAST.max_processes + 1  # the script's processes and Forge's launcher
    memory = FAST.memory_bytes + FAST.work_bytes + 2 * FAST.tmp_bytes  # the tmpfs folders count as memory
    assert host["Memory"] == memory and host["MemorySwap"] == memory
    assert host["LogConfig"]["Type"] == "none"  # nothing the container prints is kept by the engine
    assert set(host["Tmpfs"]) == {"/tmp", "/work", "/sys"}
    assert f"size={FAST.work_bytes}" in host["Tmpfs"]["/work"] and f"size={FAST.tmp_bytes}" in host["Tmpfs"]["/tmp"]
    assert not host["Binds"] and all(mount["ReadOnly"] for mount in host["Mounts"])  # no host folder is writable
    targets = {mount["Target"] for mount in host["Mounts"] if mount["Type"] == "bind"}
    assert targets == {"/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/work/script.py", "/work/tickets.csv"}
    assert config["Image"] == sandbox_image.image_tag()


@ENGINE
def test_the_script_has_no_privileges_inside(djob):
    probe = """
        import json, os
        status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
        launcher = dict(line.split(":", 1) for line in open("/proc/1/status").read().splitlines())
        print(json.dumps({
            "uid": [os.getuid(), os.geteuid()],
            "caps": [int(status[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")],
            "no_new_privs": [status["NoNewPrivs"].strip(), launcher["NoNewPrivs"].strip()],
            "seccomp": status["Seccomp"].strip(),
            "filters": status.get("Seccomp_filters", "2").strip(),
            "root_read_only": bool(os.statvfs("/").f_flag & os.ST_RDONLY),
            "work_size": os.statvfs("/work").f_blocks * os.statvfs("/work").f_frsize,
        }))
    """
    result = djob(probe)
    assert result.ok, result
    seen = json.loads(result.stdout_tail)
    assert seen["uid"] == [NOBODY, NOBODY] if os.geteuid() == 0 else [os.getuid(), os.getuid()]
    assert seen["caps"] == [0, 0, 0, 0, 0]  # CapBnd 0: --cap-drop ALL (as nobody the others are 0 anyway)
    assert seen["no_new_privs"] == ["1", "1"]  # the launcher too: --security-opt no-new-privileges
    assert seen["seccomp"] == "2" and seen["filters"] == "2"  # Docker's filter and Forge's, stacked
    assert seen["root_read_only"] is True  # --read-only
    assert seen["work_size"] == FAST.work_bytes  # the folder is a tmpfs of exactly work_bytes


@ENGINE
def test_processes_together_cannot_pass_the_containers_memory(djob):
    """Each child stays under the per-process limit (512 MiB); together they pass the container's
    memory (552 MiB): the kernel's OOM killer ends one. bubblewrap has no such total."""
    code = """
        import os
        children = []
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                block = b"\\x01" * (400 * 1024**2)
                import time; time.sleep(3)
                os._exit(0)
            children.append(pid)
        print([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children])
    """
    result = djob(code)
    assert result.returncode == 0, result
    assert -9 in json.loads(result.stdout_tail)  # SIGKILL from the OOM killer


@ENGINE
def test_docker_without_libseccomp_keeps_its_default_filter_and_says_so(djob, monkeypatch):
    """Without Forge's filter, Docker's default one still refuses unshare, but allows what Forge's
    also refuses (ptrace, personality, io_uring, inet sockets): the stacked filter is what closes them."""
    monkeypatch.setattr(seccomp, "unavailable_reason", lambda: "libseccomp (the C library) is not installed")
    code = """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        print(libc.unshare(0x10000000), libc.ptrace(0, 0, 0, 0), libc.socket(2, 2, 0) >= 0)
    """
    result = djob(code)
    assert result.ok and result.stdout_tail.split() == ["-1", "0", "True"], result
    assert result.warnings == [
        "The script ran in docker with Docker's default system-call filter only, not Forge's "
        "(libseccomp (the C library) is not installed)."
    ]


@ENGINE
def test_forge_builds_its_image_when_the_engine_lacks_it(djob, docker_engine):
    """No registry needed: the image comes from this machine's Python, and comes back when deleted."""
    tag = sandbox_image.image_tag()
    if docker_engine.built is not None:  # the private engine started empty: the session fixture built it
        assert docker_engine.built < 60
    members = {m.name for m, _ in sandbox_image.image_members()}
    assert str(sandbox_image.python_path()).lstrip("/") in members
    stdlib = str(sandbox_image.stdlib_dir()).lstrip("/")
    assert f"{stdlib}/os.py" in members and f"{stdlib}/json/__init__.py" in members
    assert not any("site-packages" in name or name.startswith(f"{stdlib}/test/") for name in members)
    subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, check=True)
    result = djob("import sys\nprint(sys.version)\n")
    assert result.ok and result.stdout_tail.strip() == __import__("sys").version, result
    assert subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


@ENGINE
def test_inputs_with_commas_and_colons_in_their_names(djob, monkeypatch):
    """Docker's -v splits at colons; Forge's --mount fields are CSV-quoted."""
    folder = djob.root / "in,put:2"
    (folder / "private").mkdir(parents=True)
    (folder / "rows,v1:final.csv").write_text("a,b\n")
    (folder / "private" / "key").write_text("SECRET")
    for path in (folder, folder / "private"):
        path.chmod(0o755)
    code = "import os\nprint(sorted(os.listdir('in,put:2')), open('in,put:2/rows,v1:final.csv').read().strip())\n"
    monkeypatch.setenv("FORGE_HOME", str(folder / "private"))  # hidden inside the input folder
    result = djob(code + "print(os.listdir('in,put:2/private'))\n", inputs=[folder])
    assert result.ok and result.stdout_tail.splitlines() == ["['private', 'rows,v1:final.csv'] a,b", "[]"], result


@ENGINE
def test_the_launcher_cannot_be_killed_or_stopped_by_the_script(djob):
    """Forge's launcher is the container's init: signals from inside its PID namespace are dropped."""
    code = """
        import os, signal
        for sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM):
            os.kill(1, sig)
        open("output.jsonl", "w").write("{}")
        print("still here")
    """
    result = djob(code)
    assert result.ok and result.stdout_tail == "still here\n", result
    assert (djob.work / "output.jsonl").read_text() == "{}"  # copied out by the launcher it tried to kill


@ENGINE
def test_docker_is_chosen_when_asked_and_its_result_is_docker(djob):
    assert sandbox.choose_runtime("docker") == "docker"
    result = djob("print('hello')\n")
    assert result.runtime == "docker" and result.stdout_tail == "hello\n" and result.warnings == []


def _tar(entries: list[tuple[str, bytes | str | None, bytes]]) -> io.BytesIO:
    """A tar stream: (name, tar type, content or link target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = data.decode()
                tar.addfile(info)
            else:
                info.size = len(data) if kind == tarfile.REGTYPE else 0
                tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    "entries",
    [
        [("../escaped.txt", tarfile.REGTYPE, b"x")],
        [("/tmp/escaped.txt", tarfile.REGTYPE, b"x")],
        [("out", tarfile.SYMTYPE, b".."), ("out/escaped.txt", tarfile.REGTYPE, b"x")],
        [("sub", tarfile.DIRTYPE, b""), ("sub/../../escaped.txt", tarfile.REGTYPE, b"x")],
        [("hard", tarfile.LNKTYPE, b"/etc/passwd"), ("dev", tarfile.CHRTYPE, b"")],
    ],
    ids=["parent", "absolute", "through-a-link", "dotdot-in-a-folder", "hard-link-and-device"],
)
def test_unpacking_never_writes_outside_the_folder(tmp_path, entries):
    """Whatever the stream from the container holds, only the working folder receives files
    (checked without an engine: the launcher's tar is replaced by a hostile one)."""
    work = tmp_path / "work"
    work.mkdir()
    problem = sandbox_docker.unpack(_tar(entries), work, FAST)
    assert problem is None
    assert not (tmp_path / "escaped.txt").exists() and not os.path.exists("/tmp/escaped.txt")
    assert [p.name for p in work.rglob("*") if p.is_file() and not p.is_symlink()] == []


def test_unpacking_counts_files_and_bytes(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    many = _tar([(f"f{i}", tarfile.REGTYPE, b"x") for i in range(FAST.max_files + 5)])
    assert sandbox_docker.unpack(many, work, FAST) == "it left more than 50 files in its folder (the file-count limit)"
    assert len(list(work.iterdir())) == FAST.max_files
    big = _tar([("a.bin", tarfile.REGTYPE, b"x" * 1024), ("b.bin", tarfile.REGTYPE, b"x" * 1024)])
    small = replace(FAST, work_bytes=1500)
    assert "folder-size limit" in sandbox_docker.unpack(big, tmp_path / "work", small)
