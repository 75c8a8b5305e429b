"""Running the web app with uvicorn: the port checked first (a taken port is a clear message naming the
next free one, not uvicorn's log line and exit), uvicorn's own logging kept to warnings."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from forgellm.errors import ErrorCode, ForgeError
from forgellm.web.security import TOKEN_QUERY, Access

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
PORTS_TO_TRY = 100


def port_free(host: str, port: int) -> bool:
    """Whether `port` can be bound on `host` right now (as uvicorn binds: SO_REUSEADDR set)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def next_free_port(host: str, after: int) -> int | None:
    return next(
        (port for port in range(after + 1, min(after + 1 + PORTS_TO_TRY, 65536)) if port_free(host, port)), None
    )


def check_port(host: str, port: int, option: str = "--port") -> None:
    """Raise PORT_IN_USE, with the next free port as the fix, when `port` is taken on `host`."""
    if port == 0 or port_free(host, port):
        return
    free = next_free_port(host, port)
    fix = (
        f"Use `{option} {free}` (free now), or stop what listens on {port}."
        if free
        else f"Stop what listens on {port}."
    )
    raise ForgeError(
        f"Port {port} on {host} is in use by another program.",
        fix=fix,
        code=ErrorCode.PORT_IN_USE,
        data={"host": host, "port": port, "free": free},
    )


def address(host: str, port: int, access: Access | None = None, path: str = "/") -> str:
    """The address to open, with the token when one is needed (it is printed once, at start)."""
    shown = f"[{host}]" if ":" in host else ("127.0.0.1" if host in ("0.0.0.0", "") else host)
    url = f"http://{shown}:{port}{path}"
    return f"{url}?{TOKEN_QUERY}={access.token}" if access is not None and access.token else url


def uvicorn_server(app: Any, host: str, port: int) -> Any:
    """A uvicorn Server for `app` (not started): no access log, its own messages only from warnings up."""
    import uvicorn

    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, log_level="warning", lifespan="on",
        timeout_graceful_shutdown=3,
    )  # fmt: skip
    return uvicorn.Server(config)


def serve(app: Any, host: str, port: int, on_started: Callable[[int], None] | None = None) -> None:
    """Serve `app` until Ctrl-C; `on_started(port)` once it listens (port 0 picks a free one)."""
    import asyncio

    check_port(host, port)
    server = uvicorn_server(app, host, port)

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started and on_started is not None:
            on_started(bound_port(server))
        await task

    try:
        asyncio.run(main())
    except KeyboardInterrupt:  # uvicorn shut down gracefully, then re-raised the Ctrl-C it caught
        if server.started:
            return  # Ctrl-C is how a server is meant to stop
        raise
    if not server.started:  # uvicorn logged why (e.g. the port was taken in between) and gave up
        raise ForgeError(
            f"The server could not start on {host}:{port}.",
            fix="Try another `--port`, or look at the message above.",
            code=ErrorCode.PORT_IN_USE,
            data={"host": host, "port": port, "free": next_free_port(host, port)},
        )


def bound_port(server: Any) -> int:
    """The port a started uvicorn server listens on (the real one when asked for port 0)."""
    return int(server.servers[0].sockets[0].getsockname()[1])
