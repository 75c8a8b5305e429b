"""Who may talk to Forge's web server, and which names a request may use.

- Loopback only by default. Binding any other address needs a token: FORGE_UI_TOKEN, else one generated
  and printed at start. With a token, every request carries it (Authorization: Bearer, which is how the
  OpenAI clients send their api_key; or ?token= once, which sets an HttpOnly cookie for the pages, their
  fetches and their server-sent events, since EventSource cannot send headers).
- On loopback without a token the Host header must name loopback: a web page that re-binds its own
  domain to 127.0.0.1 (DNS rebinding) cannot read the dashboard.
- No CORS headers are ever sent, so browsers keep other sites' scripts from reading any response; and
  the routes that change something take JSON bodies, which a cross-site form cannot send.
- Run ids and file names from a URL are checked against one pattern and resolved inside their folder.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import re
import secrets
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from forgellm.errors import ErrorCode, ForgeError

TOKEN_ENV = "FORGE_UI_TOKEN"
TOKEN_COOKIE = "forge_token"
TOKEN_QUERY = "token"
MIN_TOKEN_LENGTH = 16
TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9._~/=-]+")  # fits a header, a cookie and a URL unquoted
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# A run id, checkpoint, export or file name as it may appear in a URL: no separators, no leading dot.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,159}")


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: only its resolution could tell, and that may change
        return False


@dataclass(frozen=True)
class Access:
    """The server's rule: the address it binds and the token every request must carry (None: none asked)."""

    host: str
    token: str | None
    generated: bool = False  # made at start (printed once), not from FORGE_UI_TOKEN

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def access_for(host: str) -> Access:
    """The access rule for serving on `host`: a token is required off loopback, optional on it."""
    token = os.environ.get(TOKEN_ENV, "").strip() or None
    if token is not None and (len(token) < MIN_TOKEN_LENGTH or not TOKEN_CHARACTERS.fullmatch(token)):
        raise ForgeError(
            f"{TOKEN_ENV} cannot protect the server: it needs {MIN_TOKEN_LENGTH} or more letters, digits or "
            f"._~/=- (it has {len(token)} characters).",
            fix=f"Use at least {MIN_TOKEN_LENGTH} random characters, e.g. "
            f'`export {TOKEN_ENV}=$(python -c "import secrets; print(secrets.token_urlsafe(24))")`, or unset it.',
            code=ErrorCode.USAGE_INVALID,
        )
    if token is None and not is_loopback(host):
        return Access(host, secrets.token_urlsafe(24), generated=True)
    return Access(host, token)


def _host_name(header: str) -> str:
    """The name part of a Host header: 'localhost:8000' -> 'localhost', '[::1]:80' -> '::1'."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _request_token(scope: dict[str, Any]) -> tuple[str | None, bool]:
    """(token the request carries, whether it came in the query string)."""
    headers = dict(scope.get("headers") or [])
    authorization = headers.get(b"authorization", b"").decode("latin-1")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip(), False
    cookie = headers.get(b"cookie", b"").decode("latin-1")
    if cookie:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(cookie)
        except Exception:  # a malformed Cookie header carries no token
            jar = SimpleCookie()
        if TOKEN_COOKIE in jar:
            return jar[TOKEN_COOKIE].value, False
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if query.get(TOKEN_QUERY):
        return query[TOKEN_QUERY][0], True
    return None, False


async def _refuse(send: Any, status: int, message: str, code: str) -> None:
    # The OpenAI error shape: the official clients show its message as the exception's text.
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": code}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware enforcing `Access` on every HTTP request (pages, API, server-sent events). Plain
    ASGI, not BaseHTTPMiddleware, so streamed responses pass through unbuffered."""

    def __init__(self, app: Any, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.access.loopback:
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            if host and _host_name(host) not in LOOPBACK_NAMES and not is_loopback(_host_name(host)):
                await _refuse(
                    send, 400, f"Host {host!r} is not this server's: open it as http://127.0.0.1.", "host-refused"
                )
                return
        if self.access.token is None:
            await self.app(scope, receive, send)
            return
        token, from_query = _request_token(scope)
        if token is None or not hmac.compare_digest(token.encode(), self.access.token.encode()):
            await _refuse(
                send,
                401,
                "This Forge server needs its token: `Authorization: Bearer TOKEN`, or open the address "
                f"`forge ui` printed (it ends in ?{TOKEN_QUERY}=...).",
                ErrorCode.WEB_UNAUTHORIZED.value,
            )
            return
        if not from_query:
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: dict[str, Any]) -> None:
            # The token came in the address: keep it in a cookie the page's own requests carry.
            if message["type"] == "http.response.start":
                cookie = f"{TOKEN_COOKIE}={self.access.token}; Path=/; HttpOnly; SameSite=Strict"
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def safe_name(value: str, what: str = "name") -> str:
    """`value` if it can name a run, checkpoint or file inside a folder; else a 404 (no such thing)."""
    from fastapi import HTTPException

    if not SAFE_NAME.fullmatch(value) or ".." in value:
        raise HTTPException(status_code=404, detail=f"No {what} named {value[:80]!r}.")
    return value


def inside(root: Path, *names: str) -> Path:
    """root/names..., each name checked and the result resolved inside root (symbolic links included)."""
    from fastapi import HTTPException

    path = root.joinpath(*(safe_name(name, "file") for name in names))
    resolved, base = path.resolve(), root.resolve()
    if resolved != base and base not in resolved.parents:
        raise HTTPException(status_code=404, detail=f"No file named {'/'.join(names)[:80]!r}.")
    return resolved
