"""Defensive reads for `forge status`: a missing or damaged file is a fact to show, never a traceback."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any


def read_json_or_none(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`; None when it is missing, unreadable, cut off or not an object.

    Not config.io.read_json_object, which gives {} for all of these: status must tell a missing or
    damaged record from an empty one (see read_record)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_record(path: Path, problems: list[str], label: str) -> dict[str, Any] | None:
    """read_json_or_none, noting "<label> is damaged" in `problems` when the file exists but cannot be used."""
    data = read_json_or_none(path)
    if data is None and path.exists():
        problems.append(f"{label} is damaged or unreadable")
    return data


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
