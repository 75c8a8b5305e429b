"""Registration with Ollama through the official client, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from export.ollama_server import CANNED_ANSWER, closed_port_url, ollama_server

from forgellm.errors import ForgeError
from forgellm.export.ollama import (
    DEFAULT_HOST,
    create_command,
    ollama_available,
    ollama_host,
    register_with_ollama,
)
from forgellm.templates import build_chat_format, to_ollama_template

PARAMETERS = {"stop": ["<|im_end|>"], "num_ctx": 2048}


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    """A stand-in GGUF: the server checks bytes and digests, not tensors."""
    folder = tmp_path / "exports" / "my-model"
    folder.mkdir(parents=True)
    path = folder / "my-model-q8_0.gguf"
    path.write_bytes(b"GGUF" + bytes(range(256)) * 400)
    return path


def _register(gguf: Path, host: str, **kwargs):
    options = {
        "template": to_ollama_template(build_chat_format("chatml")),
        "system": "You are Forge.",
        "parameters": PARAMETERS,
        "host": host,
        **kwargs,
    }
    return register_with_ollama("my-model", gguf, **options)


# --- availability ------------------------------------------------------------------------------------


def test_available_when_a_server_answers():
    with ollama_server() as server:
        assert ollama_available(server.url)
        assert ollama_available(server.url + "/")
        assert server.requests_to("GET", "/api/version")


def test_unavailable_when_nothing_listens():
    assert not ollama_available(closed_port_url(), timeout=0.5)


def test_unavailable_once_the_server_is_gone():
    with ollama_server() as server:
        url = server.url
    assert not ollama_available(url, timeout=0.5)


def test_unavailable_when_the_server_is_not_ollama():
    with ollama_server() as server:  # under another prefix every route is a 404
        assert not ollama_available(server.url + "/not-ollama", timeout=0.5)


def test_unavailable_for_an_unsupported_scheme():
    assert not ollama_available("ftp://127.0.0.1:1", timeout=0.5)


# --- registration ------------------------------------------------------------------------------------


def test_register_uploads_the_gguf_and_creates_the_model(gguf):
    template = to_ollama_template(build_chat_format("chatml"))
    with ollama_server() as server:
        result = _register(gguf, server.url, template=template)
    digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert result.digest == digest
    assert server.blobs == {digest: gguf.read_bytes()}  # exactly the GGUF's bytes, verified by the server
    (create,) = server.requests_to("POST", "/api/create")
    assert create.json == {
        "model": "my-model",
        "files": {"my-model-q8_0.gguf": digest},
        "template": template,
        "system": "You are Forge.",
        "parameters": PARAMETERS,
        "stream": False,
    }
    assert result.model == "my-model"
    assert result.smoke_answer == CANNED_ANSWER
    assert result.seconds > 0


def test_register_asks_the_created_model_one_short_question(gguf):
    with ollama_server() as server:
        _register(gguf, server.url, smoke_prompt="Say hi")
    (chat,) = server.requests_to("POST", "/api/chat")
    assert chat.json["model"] == "my-model"
    assert chat.json["messages"] == [{"role": "user", "content": "Say hi"}]
    assert chat.json["stream"] is False
    assert chat.json["options"]["num_predict"] <= 64  # a smoke test, not an essay


def test_register_without_smoke_prompt_or_system(gguf):
    with ollama_server() as server:
        result = _register(gguf, server.url, system=None, smoke_prompt=None)
    assert result.smoke_answer is None
    assert not server.requests_to("POST", "/api/chat")
    (create,) = server.requests_to("POST", "/api/create")
    assert "system" not in create.json


def test_refused_create_shows_ollamas_message(gguf):
    message = 'unsupported architecture "mamba2"'
    with ollama_server(refuse_create=message) as server:
        with pytest.raises(ForgeError) as info:
            _register(gguf, server.url)
    assert message in info.value.message
    assert "creating the model my-model" in info.value.message
    assert f"{gguf.parent}/" in info.value.fix
    assert "ollama create my-model -f" in info.value.fix
    assert not server.requests_to("POST", "/api/chat")


def test_unreachable_server_is_a_clear_error(gguf):
    url = closed_port_url()
    with pytest.raises(ForgeError) as info:
        _register(gguf, url)
    assert "Could not talk to Ollama" in info.value.message and url in info.value.message
    assert "kept in" in info.value.fix


def test_missing_gguf_is_a_clear_error(tmp_path):
    with ollama_server() as server:
        with pytest.raises(ForgeError) as info:
            _register(tmp_path / "gone.gguf", server.url)
    assert "gone.gguf" in info.value.message
    assert not server.requests_to("POST", "/api/create")


def test_server_checks_digests_like_ollama():
    """The fake refuses a blob whose bytes do not match its digest, so the upload test means something."""
    import httpx

    with ollama_server() as server:
        bad = "sha256:" + "0" * 64
        response = httpx.post(f"{server.url}/api/blobs/{bad}", content=b"not those bytes")
        assert response.status_code == 400 and "digest mismatch" in response.json()["error"]
        assert httpx.head(f"{server.url}/api/blobs/{bad}").status_code == 404
        create = httpx.post(f"{server.url}/api/create", json={"model": "m", "files": {"m.gguf": bad}})
        assert create.status_code == 400


def test_server_streams_create_status_lines():
    import httpx

    with ollama_server() as server:
        body = b"weights"
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        assert httpx.post(f"{server.url}/api/blobs/{digest}", content=body).status_code == 201
        assert httpx.head(f"{server.url}/api/blobs/{digest}").status_code == 200
        response = httpx.post(f"{server.url}/api/create", json={"model": "m", "files": {"m.gguf": digest}})
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert len(lines) > 1 and lines[-1] == {"status": "success"}


# --- OLLAMA_HOST -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "url"),
    [
        (None, DEFAULT_HOST),
        ("", DEFAULT_HOST),
        ("  ", DEFAULT_HOST),
        ("1.2.3.4", "http://1.2.3.4:11434"),
        (":56789", "http://127.0.0.1:56789"),
        ("example.com:56789", "http://example.com:56789"),
        ("example.com", "http://example.com:11434"),
        ("http://example.com", "http://example.com:80"),
        ("https://example.com", "https://example.com:443"),
        ("https://example.com:56789/path/", "https://example.com:56789/path"),
        ("example.com/ollama", "http://example.com:11434/ollama"),
        ('"127.0.0.1:8080"', "http://127.0.0.1:8080"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:11435", "http://127.0.0.1:11435"),
        ("[::]:11434", "http://[::1]:11434"),
        ("[::1]:1234", "http://[::1]:1234"),
        ("[fe80::1]", "http://[fe80::1]:11434"),
        ("localhost:notaport", "http://localhost:11434"),
        ("HTTP://Example.com:99", "http://example.com:99"),
    ],
)
def test_ollama_host(value, url):
    environ = {} if value is None else {"OLLAMA_HOST": value}
    assert ollama_host(environ) == url


def test_ollama_host_reads_the_environment_by_default(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "10.0.0.2:7777")
    assert ollama_host() == "http://10.0.0.2:7777"


# --- the command to run by hand ----------------------------------------------------------------------


def test_create_command():
    assert create_command("my-model", Path("exports/my-model/Modelfile")) == (
        "ollama create my-model -f exports/my-model/Modelfile"
    )


def test_create_command_quotes_for_the_shell():
    command = create_command("my-model:v1", Path("/home/me/my exports/Modelfile"))
    assert command == "ollama create my-model:v1 -f '/home/me/my exports/Modelfile'"
