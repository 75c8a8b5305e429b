"""`forge ui` and `forge serve` as a user runs them: real processes, the address they print, the official
openai client, Ctrl-C; a taken port; and no credential in any page or response of a project whose
advisor has keys in the environment and in the credentials file."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from web import dashboard_support as ds
from web.api_support import model_project

FORGE = str(Path(sys.executable).with_name("forge"))  # the console script, as a user runs it
ADDRESS = re.compile(r"Forge (?:dashboard|API): (http://\S+)")
FAKE_KEYS = {"GEMINI_API_KEY": "fake-gemini-key-6f1c2a9e", "OPENAI_API_KEY": "sk-fake-openai-key-0b7d44"}
STORED_KEY = "fake-stored-key-93ad1e77"


@contextmanager
def forge_server(args: list[str], env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """`forge ARGS` until it prints its address; yields (address, process); Ctrl-C at the end."""
    process = subprocess.Popen(
        [FORGE, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "300", **(env or {})},
    )  # fmt: skip
    seen = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            seen.append(line)
            if found := ADDRESS.search(line):
                break
        else:
            pytest.fail(f"`forge {' '.join(args)}` printed no address (exit {process.wait()}):\n{''.join(seen)}")
        yield found.group(1), process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _base(address: str) -> str:
    return address.split("?")[0].rstrip("/")


def test_forge_serve_answers_the_openai_client_and_stops_on_ctrl_c(tmp_path, paris_model_dir):
    with forge_server(["serve", str(paris_model_dir), "--port", "0"]) as (address, process):
        client = openai.OpenAI(base_url=f"{_base(address)}/v1", api_key="unused", max_retries=0)
        (model,) = client.models.list().data
        answer = client.chat.completions.create(
            model=model.id, messages=[{"role": "user", "content": "Capital of France?"}], max_tokens=20
        )
        assert answer.choices[0].message.content.strip() == "Paris"
        assert answer.choices[0].finish_reason == "stop"
        process.send_signal(signal.SIGINT)
        rest = process.communicate(timeout=30)[0]
    assert process.returncode == 0, rest
    assert "Server stopped." in rest and "Traceback" not in rest


def test_off_loopback_forge_serve_prints_a_token_and_refuses_requests_without_it(tmp_path, paris_model_dir):
    with forge_server(["serve", str(paris_model_dir), "--host", "0.0.0.0", "--port", "0"]) as (address, _):
        token = address.split("?token=")[1]
        assert len(token) >= 24
        assert httpx.get(f"{_base(address)}/health").status_code == 401
        refused = openai.OpenAI(base_url=f"{_base(address)}/v1", api_key="wrong-token-1234567890", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            refused.models.list()
        client = openai.OpenAI(base_url=f"{_base(address)}/v1", api_key=token, max_retries=0)
        assert client.models.list().data


def test_a_taken_port_is_a_clear_message_with_the_next_free_one(tmp_path):
    root = ds.project(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [FORGE, "ui", str(root), "--port", str(port)], capture_output=True, text=True, timeout=60,
            env={**os.environ, "COLUMNS": "300"},
        )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"Port {port} on 127.0.0.1 is in use" in result.stderr and "--port " in result.stderr
    assert "Traceback" not in result.stderr


def _secret_project(tmp_path: Path, paris: Path, lyon_adapter: Path, lyon_merged: Path) -> Path:
    """Every record a page shows: runs with metrics, a study, an eval, exports; the advisor set to gemini."""
    from forgellm.config.io import load_config, save_config
    from forgellm.config.settings import store_api_key

    root = model_project(tmp_path / "bot", paris, lyon_adapter, lyon_merged)
    config = load_config(root).config
    config.advisor.provider = "gemini"
    save_config(config, root / "forge.yaml")
    store_api_key("openai", STORED_KEY)
    ds.run(root, "20260103-000000-lora-live", status="completed")
    (root / "reports").mkdir(exist_ok=True)
    (root / "reports" / "study.json").write_text(json.dumps({"rows": 3, "findings": [], "columns": []}))
    (root / "reports" / "study.html").write_text("<html>study</html>")
    (root / "reports" / "eval.json").write_text(json.dumps({"summary": {}, "examples": []}))
    return root


def test_no_page_or_response_carries_a_key(tmp_path, paris_model_dir, lyon_adapter_dir, lyon_merged_dir):
    root = _secret_project(tmp_path, paris_model_dir, lyon_adapter_dir, lyon_merged_dir)
    secrets = [*FAKE_KEYS.values(), STORED_KEY]
    with forge_server(["ui", str(root), "--port", "0"], env=FAKE_KEYS) as (address, _):
        base = _base(address)
        runs = httpx.get(f"{base}/api/runs").json()
        run_ids = [r["id"] for r in runs["runs"]]
        assert run_ids, runs
        paths = ["/", "/data", "/eval", "/exports", "/chat", "/health", "/api/runs", "/v1/models",
                 "/reports/study.html", "/static/forge.js", "/static/run.js", "/static/chat.js",
                 "/api/curves?" + "&".join(f"run={r}" for r in run_ids)]  # fmt: skip
        for run_id in run_ids:
            paths += [f"/runs/{run_id}", f"/runs/{run_id}/events"]
        seen = {}
        with httpx.Client(base_url=base, timeout=60) as client:
            for path in paths:
                seen[path] = client.get(path)
            ask = {"model": "base", "messages": [{"role": "user", "content": "Capital?"}], "max_tokens": 5}
            seen["chat"] = client.post("/v1/chat/completions", json=ask)
            seen["stream"] = client.post("/v1/chat/completions", json={**ask, "stream": True})
            seen["bad model"] = client.post("/v1/chat/completions", json={**ask, "model": "nope"})
            seen["broken model"] = client.post("/v1/chat/completions", json={**ask, "model": "export:broken-bot"})
            seen["train"] = client.post("/api/train/stop", json={})
    assert seen["/"].status_code == 200 and seen["chat"].status_code == 200, seen["chat"].text
    assert seen["broken model"].status_code == 503
    for what, response in seen.items():
        text = response.text + json.dumps(dict(response.headers))
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{what} ({response.status_code}) shows a key"
