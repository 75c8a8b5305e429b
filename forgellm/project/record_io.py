"""Reading and writing the JSON records of a project: atomic writes, and reads that survive files of
another Forge version (unknown keys are ignored, missing ones take their defaults) or damaged files
(None, so the caller decides whether that is an error, a note in `forge status`, or nothing)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

from forgellm.files import atomic_write_text

RECORD_VERSION = 1  # every record file carries it as "version"; files written before it read as 1

T = TypeVar("T")


def read_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`; None when it is missing, unreadable, cut off or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_object(path: Path, data: dict[str, Any], *, allow_nan: bool = True) -> None:
    """Write a record atomically (temp file + rename): a reader never sees half of one."""
    text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=allow_nan, default=str) + "\n"
    atomic_write_text(path, text)


def known_fields(cls: type[T], data: dict[str, Any]) -> T:
    """`cls(**data)` with the keys `cls` knows: a newer Forge's extra keys are ignored and missing ones
    take their defaults (every record field has one)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{key: value for key, value in data.items() if key in names})


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_number(value: Any) -> float | int | None:
    """A JSON number as it is; text, bool and null as None."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
