"""A real uvicorn server in a thread for the web tests: `with serving(app) as url: ...`."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from forgellm.web.launch import bound_port, uvicorn_server


@contextmanager
def serving(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` on a free port of `host` for the block; yields its base URL ('http://127.0.0.1:PORT')."""
    server = uvicorn_server(app, host, 0)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)
    shown = f"[{host}]" if ":" in host else host
    try:
        yield f"http://{shown}:{bound_port(server)}"
    finally:
        server.should_exit = True
        thread.join(10)
