"""A real HTTP server on 127.0.0.1 that speaks the part of Ollama's API that Forge uses, for export tests.

    with ollama_server() as server:                 # or ollama_server(refuse_create="unsupported model")
        register_with_ollama("m", gguf, ..., host=server.url)
        assert server.blobs[digest] == gguf.read_bytes()

Routes, answered the way Ollama answers them:
- ``GET /`` -> "Ollama is running"; ``GET /api/version`` -> {"version": ...}
- ``HEAD /api/blobs/sha256:<hex>`` -> 200 once uploaded, else 404
- ``POST /api/blobs/sha256:<hex>`` -> 201 when the body's sha256 is the digest, else 400 (plain or chunked body)
- ``POST /api/create`` -> checks that every file names an uploaded blob; streams JSON status lines (or one
  JSON object with "stream": false); ``refuse_create`` makes it fail with that message
- ``POST /api/chat`` -> a canned assistant answer for a created model, 404 for an unknown one

Every request is recorded (method, path, headers, body) and created models are kept in ``server.models``.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OLLAMA_VERSION = "0.6.8"
CANNED_ANSWER = "Hello! How can I help you today?"


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class OllamaServer:
    """A threaded fake of the Ollama server on a free port of 127.0.0.1. Use through ``ollama_server``."""

    def __init__(self, *, refuse_create: str | None = None, answer: str = CANNED_ANSWER) -> None:
        self.refuse_create = refuse_create
        self.answer = answer
        self.requests: list[RecordedRequest] = []
        self.blobs: dict[str, bytes] = {}  # digest -> uploaded bytes
        self.models: dict[str, dict[str, Any]] = {}  # model name -> its create request
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def start(self) -> OllamaServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def requests_to(self, method: str, path_prefix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    # --- routes: each returns (status, content type, body chunks); more than one chunk = streamed lines

    def _route(self, request: RecordedRequest) -> tuple[int, str, list[bytes]]:
        method, path = request.method, request.path
        if method == "GET" and path == "/":
            return 200, "text/plain; charset=utf-8", [b"Ollama is running"]
        if method == "GET" and path == "/api/version":
            return _json(200, {"version": OLLAMA_VERSION})
        if path.startswith("/api/blobs/") and method in ("HEAD", "POST"):
            return self._blob(method, path.removeprefix("/api/blobs/"), request.body)
        if method == "POST" and path == "/api/create":
            return self._create(request.json or {})
        if method == "POST" and path == "/api/chat":
            return self._chat(request.json or {})
        return 404, "text/plain; charset=utf-8", [b"404 page not found"]

    def _blob(self, method: str, digest: str, body: bytes) -> tuple[int, str, list[bytes]]:
        if method == "HEAD":
            return (200 if digest in self.blobs else 404), "text/plain", [b""]
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        if actual != digest:
            return _json(400, {"error": f"digest mismatch, expected {digest!r}, got {actual!r}"})
        with self._lock:
            self.blobs[digest] = body
        return 201, "text/plain", [b""]

    def _create(self, payload: dict[str, Any]) -> tuple[int, str, list[bytes]]:
        stream = payload.get("stream", True)  # Ollama streams unless told not to
        name = payload.get("model")
        files = payload.get("files") or {}
        if not name:
            return _json(400, {"error": "model name is required"})
        missing = [d for d in files.values() if d not in self.blobs]
        if not files or missing:
            return _json(400, {"error": f"neither 'from' or 'files' was specified or blob {missing} not found"})
        if self.refuse_create is not None:
            if not stream:
                return _json(400, {"error": self.refuse_create})
            return _lines(200, [{"status": "parsing GGUF"}, {"error": self.refuse_create}])
        with self._lock:
            self.models[name] = payload
        steps = [
            {"status": "parsing GGUF"},
            *({"status": f"using existing layer {d}"} for d in files.values()),
            {"status": "creating new layer sha256:" + "0" * 64},
            {"status": "writing manifest"},
            {"status": "success"},
        ]
        return _lines(200, steps) if stream else _json(200, steps[-1])

    def _chat(self, payload: dict[str, Any]) -> tuple[int, str, list[bytes]]:
        name = payload.get("model", "")
        if name not in self.models:
            return _json(404, {"error": f"model '{name}' not found"})
        done = {
            "model": name,
            "created_at": "2025-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": self.answer},
            "done": True,
            "done_reason": "stop",
            "total_duration": 1000,
            "eval_count": 8,
        }
        if not payload.get("stream", True):
            return _json(200, done)
        words = [{**done, "message": {"role": "assistant", "content": w}, "done": False} for w in self.answer.split()]
        return _lines(200, [*words, {**done, "message": {"role": "assistant", "content": ""}}])

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _read_body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()  # the empty line after the last chunk
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                request = RecordedRequest(
                    method=self.command,
                    path=self.path.split("?", 1)[0],
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self._read_body(),
                )
                with server._lock:
                    server.requests.append(request)
                status, content_type, chunks = server._route(request)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    if len(chunks) == 1:
                        self.send_header("Content-Length", str(len(chunks[0])))
                        self.end_headers()
                        if self.command != "HEAD":
                            self.wfile.write(chunks[0])
                        return
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for chunk in [*chunks, b""]:
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away; nothing left to answer

            do_GET = do_POST = do_HEAD = _handle

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass  # keep test output clean

        return Handler


def _json(status: int, payload: dict[str, Any]) -> tuple[int, str, list[bytes]]:
    return status, "application/json; charset=utf-8", [json.dumps(payload).encode()]


def _lines(status: int, payloads: list[dict[str, Any]]) -> tuple[int, str, list[bytes]]:
    """Ollama's streaming form: one JSON object per line (application/x-ndjson)."""
    return status, "application/x-ndjson", [json.dumps(p).encode() + b"\n" for p in payloads]


@contextmanager
def ollama_server(*, refuse_create: str | None = None, answer: str = CANNED_ANSWER) -> Iterator[OllamaServer]:
    """A running fake Ollama; ``server.url`` is what ``register_with_ollama`` takes as ``host``."""
    server = OllamaServer(refuse_create=refuse_create, answer=answer).start()
    try:
        yield server
    finally:
        server.close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
