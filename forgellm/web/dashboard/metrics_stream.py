"""A run's metrics.jsonl as server-sent events: one event per line, its id the line number (1-based), so
a browser's EventSource that reconnects (it sends the last id as `Last-Event-ID`) resumes after it.

The stream follows the file while the run trains and ends once the run is no longer the one holding the
project's train lock (status's own `training_now` rule) and every line is sent. A line that is not a JSON
object (damaged by hand, or cut off by a crash) becomes a `skipped` event and the stream goes on.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POLL_SECONDS = 0.4  # how often a live run's file is read for new lines
KEEPALIVE_SECONDS = 15.0  # a comment line keeps proxies from closing a quiet stream
RETRY_MS = 2000  # how soon a browser reconnects after the connection drops
CHUNK_BYTES = 1 << 20


@dataclass
class Line:
    """One line of metrics.jsonl: its number, and its record or why it was skipped."""

    number: int
    record: dict[str, Any] | None
    problem: str | None = None


def parse_line(number: int, raw: bytes) -> Line:
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        record = json.loads(text)
    except ValueError:
        return Line(number, None, "not valid JSON")
    if not isinstance(record, dict):
        return Line(number, None, "not a JSON object")
    return Line(number, record)


@dataclass
class MetricsReader:
    """Reads complete lines of a growing file from where it stopped. A last line without its newline is
    held back while the writer may still be writing it (`final=True` reads it as it is)."""

    path: Path
    after: int = 0  # lines already delivered (Last-Event-ID)
    offset: int = 0
    lines_seen: int = 0
    _rest: bytes = field(default=b"", repr=False)

    def read(self, final: bool = False) -> list[Line]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(CHUNK_BYTES)
        except OSError:  # not created yet (the run is starting) or removed
            data = b""
        self.offset += len(data)
        data = self._rest + data
        *complete, self._rest = data.split(b"\n")
        if final and self._rest.strip():
            complete.append(self._rest)
            self._rest = b""
        found = []
        for raw in complete:
            self.lines_seen += 1
            if self.lines_seen <= self.after or not raw.strip():
                continue
            found.append(parse_line(self.lines_seen, raw))
        return found

    @property
    def more_waiting(self) -> bool:
        """Whether the file has bytes past what was read (a read stops at CHUNK_BYTES)."""
        try:
            return self.path.stat().st_size > self.offset
        except OSError:
            return False


def sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    """One server-sent event (data as one JSON line)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n".encode()


def line_event(line: Line) -> bytes:
    if line.record is None:
        return sse("skipped", {"line": line.number, "reason": line.problem}, line.number)
    return sse("record", {**line.record, "line": line.number}, line.number)


def last_event_id(header: str | None) -> int:
    """The line to resume after; 0 (from the start) for a missing or malformed header."""
    try:
        return max(0, int((header or "").strip()))
    except ValueError:
        return 0


async def metrics_events(
    path: Path, after: int, is_live: Callable[[], bool], *, poll: float = POLL_SECONDS
) -> AsyncIterator[bytes]:
    """The stream: every line after `after`, then new lines as they come while `is_live()`; ends with an
    `end` event (the number of skipped lines) once the run is over."""
    import asyncio
    import time

    reader = MetricsReader(path, after=after)
    skipped = 0
    yield f"retry: {RETRY_MS}\n\n".encode()
    quiet_since = time.monotonic()
    while True:
        lines = await asyncio.to_thread(reader.read)
        for line in lines:
            skipped += line.record is None
            yield line_event(line)
        if lines:
            quiet_since = time.monotonic()
            if reader.more_waiting:
                continue
        # Decided after reading to the end: lines written before the run ended are all sent below.
        elif not await asyncio.to_thread(is_live):
            for line in await asyncio.to_thread(reader.read, True):
                skipped += line.record is None
                yield line_event(line)
            yield sse("end", {"lines": reader.lines_seen, "skipped_here": skipped})
            return
        if time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
            yield b": keep-alive\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(poll)
