"""Defensive reads for `forge status`: a missing or damaged file is a fact to show, never a traceback."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def note_damaged(path: Path, record: T | None, problems: list[str]) -> T | None:
    """A record as its reader gave it, noting "<file> is damaged" in `problems` when the file exists but
    its reader could not use it (a missing file is for the caller to explain)."""
    if record is None and path.exists():
        problems.append(f"{path.name} is damaged or unreadable")
    return record


def iso_mtime(path: Path) -> str | None:
    try:
        return iso_time(path.stat().st_mtime)
    except OSError:
        return None


def iso_time(timestamp: float | None) -> str | None:
    if not isinstance(timestamp, (int, float)) or isinstance(timestamp, bool):
        return None
    try:
        return datetime.fromtimestamp(timestamp).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return None


def number(value: Any) -> float | int | None:
    """A JSON number as it is, anything else (text, bool, null) as None."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
