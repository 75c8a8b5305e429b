"""A private Docker engine for the tests (the advisor's Docker sandbox, the runtime's images and runner):
started once per session, stopped at the end.

It has its own data and exec roots and socket under a temporary folder, and touches neither the
host's iptables nor its IP forwarding (``--iptables=false --ip-forward=false --bridge=none``), so
it can run beside a system engine. ``DOCKER_HOST`` points at it while the session runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

# A DOCKER_HOST where no engine answers: what the tests that do not ask for an engine see.
NO_DOCKER = "unix:///nonexistent/forge-tests-no-docker.sock"
INSTALL = "`apt-get install docker.io` (Debian/Ubuntu), run the tests as root"


def why_no_private_engine() -> str | None:
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        return f"no Docker engine (`dockerd`) or client (`docker`) is installed: {INSTALL}"
    if os.geteuid() != 0:
        return f"a private Docker engine needs root; {INSTALL}"
    return None


class PrivateEngine:
    def __init__(self, *, tmpfs_bytes: int | None = 2 << 30) -> None:
        # Short paths: the engine's sockets must fit in a unix socket address (108 bytes).
        self.root = Path(tempfile.mkdtemp(prefix="forge-dockerd-"))
        self.tmpfs_bytes = tmpfs_bytes
        self.socket = self.root / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.log = self.root / "dockerd.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        # Layers in memory: on a disk with online discard, deleting them at the end took ~10 s. (Pages
        # count only as they are used; the Forge image of the runtime tests needs a few GB of them.)
        (self.root / "data").mkdir()
        if self.tmpfs_bytes:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.tmpfs_bytes},mode=0710", "forge-dockerd",
                            str(self.root / "data")], capture_output=True)  # fmt: skip
        command = [
            "dockerd", "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "dockerd.pid"), "-H", self.host,
            "--iptables=false", "--ip-forward=false", "--bridge=none", "--ip-masq=false",
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dockerd exited ({self.process.returncode}): {self.log.read_text()[-2000:]}")
            answer = subprocess.run(["docker", "-H", self.host, "info", "--format", "{{.ServerVersion}}"],
                                    capture_output=True, text=True)  # fmt: skip
            if answer.returncode == 0 and answer.stdout.strip():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"dockerd did not answer within {timeout:g} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # dockerd stops its containers first
            # Once it says so, what remains is ~10 s of dockerd and containerd saying goodbye: cut short.
            deadline = time.monotonic() + 30
            while self.process.poll() is None and time.monotonic() < deadline:
                if b"Daemon shutdown complete" in self.log.read_bytes():
                    break
                time.sleep(0.1)
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # dockerd and its containerd
            except ProcessLookupError:
                pass
            self.process.wait()
        # Whatever the engine left mounted under its roots (overlay layers, tmpfs) goes before the files.
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for point in sorted((m for m in mounts if m.startswith(str(self.root))), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def use_docker_host(monkeypatch, host: str | None) -> None:
    """DOCKER_HOST for one test: the session's engine (None: the default socket)."""
    if host is None:
        monkeypatch.delenv("DOCKER_HOST", raising=False)
    else:
        monkeypatch.setenv("DOCKER_HOST", host)


@contextlib.contextmanager
def engine_env(host: str | None):
    """DOCKER_HOST = ``host`` (None: unset) while a session fixture works with the engine: the tests'
    own DOCKER_HOST is set per test (tests/conftest.py), after the session's fixtures are made."""
    previous = os.environ.get("DOCKER_HOST")
    if host is None:
        os.environ.pop("DOCKER_HOST", None)
    else:
        os.environ["DOCKER_HOST"] = host
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = previous


def containers_named(prefix: str) -> list:
    """The engine's containers (running or not) whose name starts with ``prefix``."""
    import docker

    client = docker.from_env()
    try:
        return [c for c in client.containers.list(all=True) if c.name.startswith(prefix)]
    finally:
        client.close()
