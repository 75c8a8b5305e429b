"""The types that flow through the data pipeline: raw records from readers, examples from recipes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, str]


@dataclass(frozen=True, slots=True)
class Record:
    """One raw row/object/document as read, with where it came from (for rejects and reports)."""

    line: int  # 1-based line where the record starts in its file (row number for Parquet, 1 for a document)
    fields: dict[str, Any]  # column/key -> value (str, number, None, list or dict as the format gives)
    source: str = ""  # file name, relative to the input folder for folder inputs


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that could not be read or mapped; it goes to rejects.jsonl with its line and reason."""

    line: int
    reason: str
    source: str = ""
    excerpt: str = ""  # the first characters of the raw row, to find it again


@dataclass(frozen=True, slots=True)
class Example:
    """What a recipe makes of a record: a conversation (SFT) or a document (continued pre-training)."""

    line: int
    source: str = ""
    messages: list[Message] | None = None
    text: str | None = None
    label: str | None = None  # for stratified splits, balancing and label statistics
    date: str | None = None  # for temporal splits
    extra: dict[str, Any] = field(default_factory=dict)


class RecipeError(ValueError):
    """A record that does not fit the recipe; the message is the reason shown in rejects.jsonl."""


class EmptyTextError(RecipeError):
    """The record fits the recipe but a turn is empty: a data-quality drop, not a format error."""


class MissingColumnError(RecipeError):
    """The recipe names a column the record lacks; the fields let diagnosis propose the right column."""

    def __init__(self, message: str, *, column: str, role: str, available: list[str]) -> None:
        super().__init__(message)
        self.column, self.role, self.available = column, role, available


# Quoted ids after "id"/"ids" (reply threads: "parent id 'a1f3' not found", "reply cycle through ids 'a' -> 'b'"):
# ids such as UUIDs are not numbers, and each would otherwise count as a reason of its own.
_QUOTED_IDS = re.compile(r"\b(ids?) '[^']*'(?:(?:, | -> )'[^']*')*")


def reason_kind(reason: str) -> str:
    """A reject reason with its numbers (and quoted ids) generalised, to count reasons by kind
    ("duplicate of line N", "parent id '…' not found in the file")."""
    return re.sub(r"\d+", "N", _QUOTED_IDS.sub(r"\1 '…'", reason))[:160]
