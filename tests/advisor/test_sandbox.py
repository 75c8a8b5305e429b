"""The sandbox of advisor-written scripts: hostile scripts are stopped, with a reason a user understands.

Limits are small here (seconds, a few hundred MiB, 16 processes) so the whole file stays fast and a
fork bomb is contained long before it could disturb the machine. Each hostile script runs in both
sandboxes (``sandbox_job``): bubblewrap, and Docker with a real, private engine.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from advisor.sandbox_support import FAST
from forgellm.advisor import sandbox
from forgellm.advisor.sandbox import SandboxLimits, explain_stop, run_sandboxed
from forgellm.errors import ForgeError

BENIGN = """
    import csv, json
    with open("tickets.csv", newline="") as f, open("output.jsonl", "w") as out:
        for row in csv.DictReader(f):
            turns = [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["answer"]}]
            out.write(json.dumps({"messages": turns}) + "\\n")
"""


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_benign_script_converts_csv(sandbox_job):
    result = sandbox_job(BENIGN)
    assert result.ok and result.runtime == sandbox_job.runtime, result
    rows = _lines(sandbox_job.work / "output.jsonl")
    assert [r["messages"][0]["content"] for r in rows] == ["Where is my order?", "Can I pay by card?"]
    assert (sandbox_job.work / "output.jsonl").stat().st_uid == os.getuid()  # given back when the script ran as nobody


def test_input_is_read_only(sandbox_job):
    result = sandbox_job("open('tickets.csv', 'a').write('hacked')\n")
    # EROFS or, as nobody on a root-owned input, EACCES: either way a plain reason.
    assert "read-only" in result.killed_reason or "may not read or write" in result.killed_reason
    assert "hacked" not in sandbox_job.data.read_text()


def test_socket_to_the_host_loopback_is_blocked(sandbox_job):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    accepted: list[object] = []
    threading.Thread(target=lambda: _accept(server, accepted), daemon=True).start()
    connect = f"socket.create_connection(('127.0.0.1', {port}), timeout=3).sendall(b'data')"
    result = sandbox_job(f"import socket\n{connect}\n")
    server.close()
    assert "network" in result.killed_reason
    assert accepted == []  # the host's server never saw a connection


def _accept(server: socket.socket, accepted: list[object]) -> None:
    try:
        accepted.append(server.accept())
    except OSError:
        pass


@pytest.mark.parametrize(
    "code", ["socket.create_connection(('1.1.1.1', 443), timeout=3)", "socket.getaddrinfo('pypi.org', 443)"]
)
def test_external_network_and_dns_are_blocked(sandbox_job, code):
    result = sandbox_job(f"import socket\n{code}\n")
    assert result.returncode != 0
    assert result.killed_reason == "it tried to use the network, which the sandbox blocks"


def test_secrets_outside_its_folder_are_not_readable(sandbox_job):
    secret = sandbox_job.root / "elsewhere" / "id_rsa"
    secret.parent.mkdir()
    secret.write_text("PRIVATE KEY")
    home = Path.home()
    probe = f"""
        import json, os
        seen = {{}}
        for path in [{str(secret)!r}, {str(home / ".ssh")!r}]:
            try:
                seen[path] = open(path).read()
            except OSError as exc:
                seen[path] = type(exc).__name__
        seen["home"] = sorted(os.listdir({str(home)!r})) if os.path.isdir({str(home)!r}) else None
        print(json.dumps(seen))
    """
    result = sandbox_job(probe)
    assert result.ok, result
    seen = json.loads(result.stdout_tail)
    assert "PRIVATE KEY" not in result.stdout_tail
    # The real home is absent, except the path to the interpreter's installation when it lives there (pyenv).
    python_home = Path(sys.base_prefix).resolve()
    allowed = {python_home.relative_to(home).parts[0]} if home in python_home.parents else set()
    assert seen["home"] is None or set(seen["home"]) <= allowed


def test_forge_home_inside_an_input_folder_stays_hidden(sandbox_job, monkeypatch):
    """FORGE_HOME (credentials) inside a folder the script is given: that part of the folder is an
    empty tmpfs inside. Nothing here is under /tmp's replacement: the folder is bound as /work/corpus."""
    corpus = sandbox_job.root / "corpus"
    forge_home = corpus / "forge-home"
    forge_home.mkdir(parents=True)
    (corpus / "rows.csv").write_text("question,answer\nHi?,Hello.\n")
    (forge_home / "credentials.json").write_text('{"gemini": "AIza-secret"}')
    for path in (corpus, forge_home):  # as root the script runs as nobody: the folder must be open to it
        path.chmod(0o755)
    monkeypatch.setenv("FORGE_HOME", str(forge_home))
    probe = """
        import os
        print(open("corpus/rows.csv").read().splitlines()[1])
        print(os.listdir("corpus/forge-home"))
        print(open("corpus/forge-home/credentials.json").read())
    """
    result = sandbox_job(probe, inputs=[corpus])
    assert result.stdout_tail.splitlines() == ["Hi?,Hello.", "[]"], result
    assert "FileNotFoundError" in result.stderr_tail and "AIza-secret" not in result.stdout_tail


def test_writes_outside_its_folder_fail_and_leave_the_host_untouched(sandbox_job):
    marker = f"forge-escape-{os.getpid()}"
    result = sandbox_job(
        f"""
        import os
        for path in ["/tmp/{marker}", {str(sandbox_job.root / marker)!r}]:
            try:
                open(path, "w").write("x")
            except OSError:
                pass
        open("/usr/{marker}", "w").write("x")
        """
    )
    assert "outside its folder" in result.killed_reason
    assert not Path(f"/tmp/{marker}").exists() and not (sandbox_job.root / marker).exists()
    assert not Path(f"/usr/{marker}").exists()


def test_fork_bomb_is_contained_by_the_process_limit(sandbox_job):
    # First a bounded proof: 200 attempts, at most 16 processes alive.
    counted = sandbox_job(
        """
        import os, time
        started = 0
        for _ in range(200):
            try:
                if os.fork() == 0:
                    time.sleep(2)
                    os._exit(0)
                started += 1
            except OSError:
                pass
        print(started)
        """
    )
    assert counted.ok and 0 < int(counted.stdout_tail) < FAST.max_processes, counted
    bomb = sandbox_job("import os\nwhile True:\n    os.fork()\n")
    assert "process limit" in bomb.killed_reason
    assert _sandbox_processes_gone()
    assert subprocess.run(["true"]).returncode == 0  # the host can still start processes


def test_stubborn_fork_bomb_ends_at_the_wall_clock_limit(sandbox_job):
    limits = SandboxLimits(cpu_seconds=2, wall_seconds=2, max_processes=8, memory_bytes=FAST.memory_bytes)
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result = sandbox_job(bomb, limits)
    assert "wall-clock limit" in result.killed_reason and result.duration < 10
    assert _sandbox_processes_gone()  # reaped asynchronously, as above


def _sandbox_processes_gone(within_seconds: float = 10.0) -> bool:
    """The kernel reaps a killed PID namespace asynchronously: on a busy machine it takes a moment."""
    deadline = time.monotonic() + within_seconds
    while _sandbox_processes():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _sandbox_processes() -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["cmdline"]) if "/work/script.py" in (p.info["cmdline"] or [])]


def test_endless_loop_hits_the_cpu_limit(sandbox_job):
    result = sandbox_job("while True:\n    pass\n", SandboxLimits(cpu_seconds=1, wall_seconds=20))
    assert result.killed_reason == "it used more than 1 s of CPU time (the CPU limit)"
    assert result.duration < 10


def test_sleeping_script_hits_the_wall_clock_limit(sandbox_job):
    result = sandbox_job("import time\ntime.sleep(60)\n", SandboxLimits(wall_seconds=1))
    assert result.killed_reason == "it ran longer than 1 s (the wall-clock limit) and was stopped"


def test_huge_memory_hits_the_memory_limit(sandbox_job):
    result = sandbox_job("block = bytearray(4 * 1024**3)\n")
    assert result.killed_reason == "it needed more than 512 MiB of memory (the memory limit)"


def test_huge_file_hits_the_file_size_limit(sandbox_job):
    result = sandbox_job("with open('big.bin', 'wb') as f:\n    for _ in range(64):\n        f.write(b'x' * 1024**2)\n")
    assert "file-size limit" in result.killed_reason
    assert (sandbox_job.work / "big.bin").stat().st_size <= FAST.max_output_bytes


def test_private_tmp_is_small(sandbox_job):
    result = sandbox_job("open('/tmp/fill', 'wb').write(b'x' * 64 * 1024**2)\n")
    assert result.returncode != 0 and "No space left on device" in result.stderr_tail


def test_environment_secrets_do_not_reach_the_script(sandbox_job, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-do-not-leak")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-do-not-leak")
    result = sandbox_job("import json, os\nprint(json.dumps(dict(os.environ)))\n")
    env = json.loads(result.stdout_tail)
    assert "do-not-leak" not in result.stdout_tail
    assert set(env) <= {"PATH", "LANG", "LC_ALL", "HOME", "LC_CTYPE", "PWD"}


# ---------------------------------------------------------------- choosing a runtime, without bubblewrap


@pytest.fixture
def no_tools(monkeypatch):
    """Neither bwrap nor docker on this machine."""
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)


def test_no_sandbox_and_no_flag_refuses(job, no_tools):
    with pytest.raises(ForgeError) as info:
        job(BENIGN)
    assert "no sandbox is available" in info.value.message
    assert "apt-get install bubblewrap" in info.value.fix and "--allow-unsandboxed" in info.value.fix
    assert not (job.work / "output.jsonl").exists()


def test_unsandboxed_with_flag_runs_with_limits_and_a_warning(job, no_tools):
    result = job(BENIGN, allow_unsandboxed=True)
    assert result.ok and result.runtime == "unsandboxed"
    assert len(_lines(job.work / "output.jsonl")) == 2
    assert "WITHOUT a sandbox" in result.warnings[0]
    hungry = job("block = bytearray(4 * 1024**3)\n", allow_unsandboxed=True)
    assert "memory limit" in hungry.killed_reason
    # The script had a copy of its input: the user's file is out of its reach even here.
    job("open('tickets.csv', 'w').write('gone')\n", allow_unsandboxed=True)
    assert job.data.read_text().startswith("question,answer")


def test_docker_without_an_engine_is_a_clear_error(job, monkeypatch):
    """The real docker client with no engine behind its socket."""
    if shutil.which("docker") is None:
        pytest.skip("no `docker` client installed")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{job.root / 'no-engine.sock'}")
    with pytest.raises(ForgeError) as info:
        job(BENIGN, runtime="docker")
    assert "advisor.sandbox is `docker`" in info.value.message and "no Docker engine answers" in info.value.message
    assert "systemctl start docker" in info.value.fix and "bubblewrap" in info.value.fix
    assert not (job.work / "output.jsonl").exists()


def test_bubblewrap_chosen_but_missing_is_a_clear_error(no_tools):
    with pytest.raises(ForgeError) as info:
        sandbox.choose_runtime("bubblewrap")
    assert info.value.message == "advisor.sandbox is `bubblewrap` in forge.yaml, but `bwrap` is not installed."
    assert sandbox.choose_runtime("bubblewrap", allow_unsandboxed=True) == "unsandboxed"


def test_auto_prefers_bubblewrap(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert sandbox.choose_runtime("auto") == "bubblewrap"


def test_input_named_like_the_script_is_refused(job, tmp_path):
    clash = tmp_path / "script.py"
    clash.write_text("")
    with pytest.raises(ForgeError, match="clashes"):
        run_sandboxed(clash, job.work, [clash], allow_unsandboxed=True)


@pytest.mark.parametrize(
    ("returncode", "stderr", "timed_out", "runtime", "expected"),
    [
        (152, "", False, "bubblewrap", "it used more than 2 s of CPU time (the CPU limit)"),
        (-24, "", False, "unsandboxed", "it used more than 2 s of CPU time (the CPU limit)"),
        (1, "OSError: [Errno 27] File too large", False, "bubblewrap", "it wrote a file larger than 16 MiB"),
        (1, "PermissionError: [Errno 13] Permission denied: '/etc/shadow'", False, "bubblewrap", "may not read"),
        (137, "", True, "docker", "it ran longer than 8 s (the wall-clock limit) and was stopped"),
        (1, "bwrap: Can't mount tmpfs on /newroot/tmp", False, "bubblewrap", "the sandbox could not start"),
        (1, "ValueError: bad row", False, "bubblewrap", None),
        (0, "Connection refused (caught and ignored)", False, "bubblewrap", None),
    ],
)
def test_explain_stop(returncode, stderr, timed_out, runtime, expected):
    reason = explain_stop(returncode, stderr, timed_out=timed_out, limits=FAST, runtime=runtime)
    assert reason == expected if expected is None else expected in reason
