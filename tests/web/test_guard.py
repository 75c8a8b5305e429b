"""The web server's guard, on a real uvicorn server: loopback without a token, a token everywhere else,
the Host header checked on loopback, and names from URLs kept inside their folder."""

from __future__ import annotations

import socket

import httpx
import pytest

from forgellm.errors import ErrorCode, ForgeError
from forgellm.web.app import create_app
from forgellm.web.launch import check_port
from forgellm.web.security import TOKEN_COOKIE, TOKEN_ENV, access_for, inside, is_loopback
from web.support import serving

TOKEN = "a-token-long-enough-1234"


def test_loopback_needs_no_token_and_any_other_address_gets_one(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost", "0.0.0.0", "10.0.0.2")] == [
        True, True, True, True, False, False,
    ]  # fmt: skip
    assert access_for("127.0.0.1").token is None
    generated = access_for("0.0.0.0")
    assert generated.generated and len(generated.token) >= 24
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert access_for("0.0.0.0").token == TOKEN and not access_for("0.0.0.0").generated
    assert access_for("127.0.0.1").token == TOKEN  # a token set is asked on loopback too
    monkeypatch.setenv(TOKEN_ENV, "short")
    with pytest.raises(ForgeError, match="16 or more"):
        access_for("0.0.0.0")


def test_every_request_needs_the_token_once_one_is_set(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with serving(create_app(access_for("0.0.0.0"))) as url:
        refused = httpx.get(f"{url}/health")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == ErrorCode.WEB_UNAUTHORIZED.value
        assert httpx.get(f"{url}/health", headers={"Authorization": "Bearer wrong-token-123456"}).status_code == 401
        assert httpx.get(f"{url}/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        # The printed address carries the token once; the cookie it sets serves the page's own requests.
        first = httpx.get(f"{url}/health?token={TOKEN}")
        assert first.status_code == 200 and "HttpOnly" in first.headers["set-cookie"]
        assert httpx.get(f"{url}/health", cookies={TOKEN_COOKIE: TOKEN}).status_code == 200
        assert httpx.get(f"{url}/static/forge.css", cookies={TOKEN_COOKIE: "x" * 20}).status_code == 401


def test_on_loopback_a_foreign_host_header_is_refused(monkeypatch):
    # DNS rebinding: evil.example resolving to 127.0.0.1 must not let that site's scripts read the pages.
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with serving(create_app(access_for("127.0.0.1"))) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        assert httpx.get(f"{url}/health", headers={"Host": "localhost:9"}).status_code == 200
        assert httpx.get(f"{url}/health", headers={"Host": "evil.example"}).status_code == 400
        # plotly.js comes from the installed plotly package, not a CDN
        script = httpx.get(f"{url}/static/plotly.min.js")
        assert script.status_code == 200 and len(script.content) > 1_000_000
        assert "access-control-allow-origin" not in script.headers


def test_names_from_urls_stay_inside_their_folder(tmp_path):
    from fastapi import HTTPException

    (tmp_path / "runs").mkdir()
    (tmp_path / "secret.txt").write_text("x")
    (tmp_path / "runs" / "link").symlink_to(tmp_path / "secret.txt")
    assert inside(tmp_path / "runs", "run-1", "metrics.jsonl") == (tmp_path / "runs/run-1/metrics.jsonl").resolve()
    for bad in (("..", "secret.txt"), ("../secret.txt",), (".hidden",), ("a/b",), ("link",), ("%2e%2e",)):
        with pytest.raises(HTTPException):
            inside(tmp_path / "runs", *bad)


def test_a_taken_port_names_the_next_free_one():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ForgeError) as error:
            check_port("127.0.0.1", port)
    assert error.value.code == ErrorCode.PORT_IN_USE
    free = error.value.data["free"]
    assert free and free > port and f"--port {free}" in error.value.fix
