"""The bubblewrap sandbox shows only what the script needs, caps its folder, and filters system calls.

Each hostile probe here succeeded before the corresponding protection existed (host files were
readable, the folder unbounded, every system call allowed).
"""

from __future__ import annotations

import errno
import glob
import json
import os
import shutil
import site
import tempfile
from pathlib import Path

import pytest

from advisor.sandbox_support import FAST, needs_bwrap
from forgellm.advisor import sandbox, seccomp
from forgellm.errors import ForgeError


@pytest.fixture
def outside_secret():
    """A file in a host folder that nothing binds and that is not under /tmp (which the sandbox
    replaces anyway): /opt when Forge runs as root, /var/tmp (writable by anyone) otherwise."""
    parent = "/opt" if os.access("/opt", os.W_OK) else "/var/tmp"
    folder = Path(tempfile.mkdtemp(prefix="forge-sandbox-test-", dir=parent))
    folder.chmod(0o755)
    secret = folder / "secret.txt"
    secret.write_text("HOST SECRET")
    secret.chmod(0o644)
    yield secret
    shutil.rmtree(folder, ignore_errors=True)


DOCKER_ETC = ["/etc/hosts", "/etc/resolv.conf"]
HOST_FILES = ["/etc/passwd", "/etc/hostname", "/etc/shadow", "/etc/os-release", "/usr/bin/env", "/var/log", "/opt"]


def test_host_files_outside_the_binds_do_not_exist_inside(sandbox_job, outside_secret):
    probe = f"""
        import json, os
        seen = {{}}
        for path in {[*HOST_FILES, str(outside_secret)]!r}:
            try:
                seen[path] = os.listdir(path) if os.path.isdir(path) else open(path).read()
            except OSError as exc:
                seen[path] = type(exc).__name__
        for folder in ["/", "/etc", "/usr", "/sys"]:
            seen[folder] = sorted(os.listdir(folder)) if os.path.isdir(folder) else None
        for name in {DOCKER_ETC!r}:
            seen[name] = open(name).read() if os.path.exists(name) else None
        print(json.dumps(seen))
    """
    result = sandbox_job(probe)
    assert result.ok, result
    seen = json.loads(result.stdout_tail)
    expected = dict.fromkeys([*HOST_FILES, str(outside_secret)], "FileNotFoundError")
    if sandbox_job.runtime == "docker":  # Docker always mounts these: Forge mounts empty files there
        expected["/etc/hostname"] = ""
    assert {path: seen[path] for path in [*HOST_FILES, str(outside_secret)]} == expected
    docker = {"hostname", "hosts", "resolv.conf", "mtab"} if sandbox_job.runtime == "docker" else set()
    assert set(seen["/etc"]) == {"ld.so.cache", *docker}
    assert all(seen[name] in (None, "") for name in DOCKER_ETC)  # not the host's name servers or hosts
    assert set(seen["/usr"]) <= {"lib", "lib32", "lib64", "libx32", "local"}  # local: a /usr/local Python
    assert seen["/sys"] in (None, [])  # Docker's /sys (host devices, cgroups) is an empty tmpfs
    python_top = Path(os.path.realpath(os.sys.base_prefix)).parts[1]
    allowed = {"dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "tmp", "usr", "work", python_top}
    assert set(seen["/"]) <= allowed | ({"sys", ".dockerenv"} if docker else set())


STDLIB = """
    import base64, bz2, collections, csv, datetime, decimal, gzip, hashlib, html, io, itertools, json
    import lzma, math, pathlib, random, re, sqlite3, statistics, string, struct, textwrap, unicodedata
    import uuid, zlib, xml.etree.ElementTree as ET
    rows = list(csv.DictReader(open("tickets.csv", newline="")))
    words = [w for r in rows for w in re.findall(r"[a-z]+", r["question"].lower())]
    db = sqlite3.connect(":memory:")
    db.execute("create table t (q)")
    db.executemany("insert into t values (?)", [(r["question"],) for r in rows])
    summary = {
        "rows": db.execute("select count(*) from t").fetchone()[0],
        "sqrt": math.sqrt(16),
        "mean": statistics.mean([1, 2, 3]),
        "sha": hashlib.sha256(b"x").hexdigest()[:8],
        "zip": len(gzip.compress(b"x" * 1000)) < 100 and len(lzma.compress(b"y")) > 0,
        "nfc": unicodedata.normalize("NFC", "e\\u0301") == "\\u00e9",
        "when": datetime.datetime(2024, 1, 1).isoformat(),
        "xml": ET.fromstring("<a><b/></a>")[0].tag,
        "top": collections.Counter(words).most_common(1)[0][0],
        "random": 0 <= random.random() < 1,
    }
    try:
        import yaml  # a package of Forge's own environment: scripts get the standard library only
        summary["yaml"] = "importable"
    except ImportError:
        summary["yaml"] = "absent"
    open("output.json", "w").write(json.dumps(summary))
"""


def test_a_standard_library_script_still_works(sandbox_job):
    result = sandbox_job(STDLIB)
    assert result.ok, result
    summary = json.loads((sandbox_job.work / "output.json").read_text())
    assert summary == {
        "rows": 2, "sqrt": 4.0, "mean": 2, "sha": "2d711642", "zip": True, "nfc": True,
        "when": "2024-01-01T00:00:00", "xml": "b", "top": "where", "random": True, "yaml": "absent",
    }  # fmt: skip


def test_installed_packages_are_not_visible(sandbox_job):
    """Scripts get the standard library only: the interpreter's own site-packages (and Debian's
    dist-packages) are empty inside, though the folders around them are bound."""
    probe = """
        import glob, json, os, site, sys
        folders = [*site.getsitepackages(), *glob.glob("/usr/lib/python3*/dist-packages")]
        print(json.dumps({f: sorted(os.listdir(f)) for f in folders if os.path.isdir(f)}))
    """
    host = [f for f in [*site.getsitepackages(), *glob.glob("/usr/lib/python3*/dist-packages")]
            if os.path.isdir(f) and os.listdir(f)]  # fmt: skip
    assert host, "nothing installed in the interpreter's own site-packages here: the test would prove nothing"
    result = sandbox_job(probe)
    assert result.ok, result
    assert all(listing == [] for listing in json.loads(result.stdout_tail).values()), result.stdout_tail


@needs_bwrap
def test_killing_the_launcher_only_ends_the_sandbox(job):
    """As a normal user the script may signal Forge's launcher (same uid; as root it may not):
    the sandbox then ends, nothing is copied out, and no process is left behind."""
    code = """
        import os, signal, time
        open("output.jsonl", "w").write("{}")
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(30)
    """
    result = job(code)
    assert not result.ok and result.duration < 10
    if os.geteuid() != 0:
        assert not (job.work / "output.jsonl").exists()
    assert not any("/work/script.py" in " ".join(p.cmdline()) for p in _processes())


def _processes():
    import psutil

    return [p for p in psutil.process_iter() if p.pid != os.getpid() and _alive(p)]


def _alive(process) -> bool:
    try:
        return process.status() != "zombie" and bool(process.cmdline())
    except Exception:  # gone or not ours to read
        return False


# ---------------------------------------------------------------- the working folder's size and files


def test_many_files_cannot_exceed_the_folder_size_cap(sandbox_job):
    """Each file stays under the per-file limit (16 MiB); together they pass the folder's 24 MiB."""
    code = """
        for i in range(40):
            with open(f"part-{i}.bin", "wb") as f:
                f.write(b"x" * 1024**2)
    """
    result = sandbox_job(code)
    assert "folder-size limit" in result.killed_reason and "No space left on device" in result.stderr_tail
    written = sum(p.stat().st_size for p in sandbox_job.work.iterdir())
    assert 0 < written <= FAST.work_bytes


def test_too_many_files_are_refused(sandbox_job):
    result = sandbox_job("for i in range(500):\n    open(f'row-{i}.json', 'w').close()\n")
    assert result.killed_reason == "it left more than 50 files in its folder (the file-count limit)"
    assert len(list(sandbox_job.work.iterdir())) <= FAST.max_files


def test_files_in_subfolders_count_and_are_copied_back(sandbox_job):
    code = """
        import os
        os.makedirs("a/b")
        open("a/b/deep.txt", "w").write("deep")
        os.symlink("/etc/passwd", "a/link")
    """
    result = sandbox_job(code)
    assert result.ok, result
    assert (sandbox_job.work / "a" / "b" / "deep.txt").read_text() == "deep"
    assert os.readlink(sandbox_job.work / "a" / "link") == "/etc/passwd"  # copied as a link, never followed


# ---------------------------------------------------------------- the system-call filter

# (probe, what it returns when allowed): each printed value is errno of the call, 0 when it worked.
SYSCALL_PROBES = {
    "ptrace": "libc.ptrace(0, 0, 0, 0)",  # PTRACE_TRACEME: always allowed without a filter
    "unshare-user": "libc.unshare(0x10000000)",  # CLONE_NEWUSER: a new user namespace
    "clone-newuser": "libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)",  # clone(CLONE_NEWUSER | SIGCHLD)
    "personality": "libc.personality(0xFFFFFFFF)",  # query only
    "keyctl": "libc.syscall(250, 0, -3, 0, 0, 0)",  # KEYCTL_GET_KEYRING_ID of the session keyring
    "socket-inet": "libc.socket(2, 2, 0)",  # AF_INET, SOCK_DGRAM
    "socket-inet6": "libc.socket(10, 2, 0)",
    "socket-netlink": "libc.socket(16, 3, 0)",  # AF_NETLINK, SOCK_RAW
    "socket-packet": "libc.socket(17, 3, 0)",  # AF_PACKET
    "io-uring": "libc.syscall(425, 1, ctypes.create_string_buffer(120))",  # io_uring_setup
}
EXPECTED_ERRNO = {name: errno.EPERM for name in SYSCALL_PROBES} | {
    name: errno.EAFNOSUPPORT for name in SYSCALL_PROBES if name.startswith("socket-")
}


@pytest.mark.parametrize("name", SYSCALL_PROBES)
def test_forbidden_system_calls_fail(sandbox_job, name):
    code = f"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        rc = {SYSCALL_PROBES[name]}
        if rc == 0 and {name.startswith("clone")}:
            os._exit(0)  # the child of a clone() that worked
        print(ctypes.get_errno() if rc == -1 else 0)
    """
    result = sandbox_job(code)
    assert result.stdout_tail.split() == [str(EXPECTED_ERRNO[name])], result


def test_a_forbidden_call_is_explained(sandbox_job):
    result = sandbox_job("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nif libc.unshare(0x10000000):\n"
                 "    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))\n")  # fmt: skip
    assert result.killed_reason == "it made a system call the sandbox forbids (Operation not permitted)"


def test_threads_processes_and_local_sockets_still_work(sandbox_job):
    code = """
        import os, socket, subprocess, sys, threading
        a, b = socket.socketpair()
        a.sendall(b"ok")
        done = []
        thread = threading.Thread(target=lambda: done.append(b.recv(2)))
        thread.start(); thread.join()
        child = subprocess.run([sys.executable, "-I", "-S", "-c", "print(6 * 7)"], capture_output=True, text=True)
        print(done[0].decode(), child.stdout.strip())
    """
    result = sandbox_job(code)
    assert result.ok and result.stdout_tail.split() == ["ok", "42"], result


@pytest.fixture
def no_libseccomp(monkeypatch):
    """libseccomp missing (it is installed on this machine: this is the one thing faked)."""
    monkeypatch.setattr(seccomp, "unavailable_reason", lambda: "libseccomp (the C library) is not installed")
    monkeypatch.setattr(sandbox, "docker_problem", lambda: "the `docker` command is not installed")


@needs_bwrap
def test_without_libseccomp_bubblewrap_is_refused_unless_allowed(job, no_libseccomp):
    with pytest.raises(ForgeError) as info:
        job("print('hi')\n")
    assert "without its system-call filter (libseccomp" in info.value.message
    assert "libseccomp2" in info.value.fix and "--allow-unsandboxed" in info.value.fix
    # Allowed: still bubblewrap (everything but the filter), and the user is told.
    result = job("import ctypes\nprint(ctypes.CDLL(None).unshare(0x10000000))\n", allow_unsandboxed=True)
    assert result.runtime == "bubblewrap" and result.ok
    assert result.warnings == [
        "The script ran in bubblewrap without its system-call filter (libseccomp (the C library) is not installed)."
    ]


def test_the_filter_is_a_bpf_program():
    program = seccomp.filter_program()
    assert len(program) % 8 == 0 and len(program) > 8 * len(seccomp.DENIED)  # struct sock_filter is 8 bytes


def test_without_a_sandbox_the_folder_limits_are_checked_after_the_run(job, monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    result = job("for i in range(60):\n    open(f'row-{i}.json', 'w').close()\n", allow_unsandboxed=True)
    assert result.killed_reason == "it left more than 50 files in its folder (the file-count limit)"
