"""Register an export with an Ollama server through the official ``ollama`` client.

The GGUF is uploaded as a blob, the model is created from it with the chat template, system prompt and
parameters, and one short chat checks that Ollama can run it. Every failure becomes a ForgeError that
quotes Ollama and says that the export's files stay where they are.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from forgellm.errors import ErrorCode, ForgeError
from forgellm.project.layout import ExportLayout

DEFAULT_HOST = "http://127.0.0.1:11434"
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Creating a model and loading it for the first answer can take minutes for a large GGUF on a CPU.
_READ_TIMEOUT_SECONDS = 900.0
_CONNECT_TIMEOUT_SECONDS = 5.0
_SMOKE_TOKENS = 32


@dataclass(frozen=True)
class OllamaResult:
    model: str
    smoke_answer: str | None  # None when no smoke prompt was asked
    seconds: float
    digest: str  # the GGUF blob's "sha256:..." digest in Ollama


def ollama_host(environ: Mapping[str, str] = os.environ) -> str:
    """The Ollama server URL from OLLAMA_HOST (host, host:port or URL), read the way Ollama reads it.

    Missing parts default like Ollama's: scheme http, host 127.0.0.1, port 11434 (80/443 for an explicit
    http:// or https:// URL). A bind-all address (0.0.0.0, ::) means this machine's loopback.
    """
    raw = environ.get("OLLAMA_HOST", "").strip().strip("\"'").strip()
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest = "http", raw
    scheme = scheme.lower()
    default_port = _DEFAULT_PORTS.get(scheme, 11434) if sep else 11434
    hostport, _, path = rest.partition("/")
    parts = urlsplit(f"{scheme}://{hostport}")
    host = parts.hostname or "127.0.0.1"
    try:
        port = parts.port or default_port
    except ValueError:  # not a number, or out of range: Ollama falls back to the default port too
        port = default_port
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    if address is not None:
        host = f"[{address}]" if address.version == 6 else str(address)
    path = path.strip("/")
    return f"{scheme}://{host}:{port}" + (f"/{path}" if path else "")


def ollama_available(host: str, timeout: float = 1.0) -> bool:
    """Whether an Ollama server answers at ``host`` (its /api/version), within ``timeout`` seconds."""
    import httpx

    try:
        response = httpx.get(host.rstrip("/") + "/api/version", timeout=timeout)
        return response.status_code == 200 and "version" in response.json()
    except (httpx.HTTPError, OSError, ValueError):  # refused, timed out, not HTTP, not JSON
        return False


def create_command(model_name: str, modelfile_path: Path) -> str:
    """The shell command that creates the model by hand: ``ollama create NAME -f PATH``."""
    return f"ollama create {shlex.quote(model_name)} -f {shlex.quote(str(modelfile_path))}"


def register_with_ollama(
    model_name: str,
    gguf_path: Path,
    *,
    template: str,
    system: str | None,
    parameters: dict[str, Any],
    host: str,
    smoke_prompt: str | None = "Hello",
) -> OllamaResult:
    """Create ``model_name`` in the Ollama at ``host`` from ``gguf_path``; then ask it ``smoke_prompt``."""
    import httpx
    import ollama

    gguf_path = Path(gguf_path)
    started = time.monotonic()
    client = ollama.Client(host=host, timeout=httpx.Timeout(_READ_TIMEOUT_SECONDS, connect=_CONNECT_TIMEOUT_SECONDS))
    step = f"uploading {gguf_path.name}"
    try:
        digest = client.create_blob(gguf_path)
        step = f"creating the model {model_name}"
        client.create(
            model=model_name,
            files={gguf_path.name: digest},
            template=template,
            system=system or None,
            parameters=parameters,
            stream=False,
        )
        answer = None
        if smoke_prompt:
            step = f"running {model_name} for a first answer"
            reply = client.chat(
                model=model_name,
                messages=[{"role": "user", "content": smoke_prompt}],
                options={"num_predict": _SMOKE_TOKENS},
                stream=False,
            )
            answer = reply.message.content or ""
    except ollama.ResponseError as exc:
        raise _failure(f"Ollama refused {step}: {exc.error}", model_name, gguf_path, host) from exc
    except (ConnectionError, httpx.HTTPError) as exc:
        raise _failure(f"Could not talk to Ollama at {host} while {step}: {exc}", model_name, gguf_path, host) from exc
    except OSError as exc:
        raise _failure(f"Could not read {gguf_path} while {step}: {exc}", model_name, gguf_path, host) from exc
    finally:
        client.close()
    return OllamaResult(model=model_name, smoke_answer=answer, seconds=time.monotonic() - started, digest=digest)


def _failure(message: str, model_name: str, gguf_path: Path, host: str) -> ForgeError:
    folder = gguf_path.parent
    command = create_command(model_name, ExportLayout(folder).modelfile)
    return ForgeError(
        message,
        fix=f"The export's files are kept in {folder}/. Once Ollama runs (at {host}, or set OLLAMA_HOST), "
        f"create the model with: {command}",
        code=ErrorCode.OLLAMA_FAILED,
    )
