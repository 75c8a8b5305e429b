"""The shape of one record of the user's file, as the recipe reads it: which fields a synthetic example
must have and of what type, as a strict pydantic model (also the JSON schema the advisor's server follows).

Fields are the recipe's columns (ids, dates and other columns the recipe does not read are left out of
synthetic rows). A field's type is read from the seed values: text, a number, a boolean, or a list of
small objects of text (a conversation: ``messages``, ShareGPT ``conversations``, Alpaca ``history`` pairs).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from forgellm.errors import ErrorCode, ForgeError

MAX_TEXT = 20_000  # characters in one field of a synthetic example
MIN_LIMIT = 80  # the smallest limit of a text field: short labels may still be spelled out


def recipe_columns(recipe: Any) -> list[str]:
    """The columns the recipe reads, in its order (a role may name several, e.g. subject then body)."""
    names: list[str] = []
    for value in (getattr(recipe, "columns", None) or {}).values():
        for name in value if isinstance(value, list) else [value]:
            if isinstance(name, str) and name not in names:
                names.append(name)
    return names


def example_model(seeds: list[dict[str, Any]], columns: list[str]) -> type[BaseModel]:
    """A strict model of one example: every column required, no other key. A text is at most twice the
    longest of its column in the seeds: the server's grammar then stops a model that rambles on."""
    fields: dict[str, Any] = {}
    for column in columns:
        values = [seed[column] for seed in seeds if seed.get(column) not in (None, "")]
        longest = max((len(json.dumps(v, ensure_ascii=False)) for v in values), default=MAX_TEXT // 2)
        fields[column] = (_field_type(values, min(MAX_TEXT, max(MIN_LIMIT, 2 * longest))), Field(...))
    return create_model("SyntheticExample", __config__=ConfigDict(extra="forbid"), **fields)


def _field_type(values: list[Any], limit: int) -> Any:
    if not values or all(isinstance(v, str) for v in values):
        return _text(limit)
    if all(isinstance(v, bool) for v in values):
        return bool
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return float if any(isinstance(v, float) for v in values) else int
    if all(isinstance(v, list) for v in values):
        items = [item for value in values for item in value]
        if items and all(isinstance(item, dict) for item in items):
            keys = sorted({key for item in items for key in item if isinstance(item[key], str)})
            turn = create_model(
                "Turn", __config__=ConfigDict(extra="forbid"), **{key: (_text(limit), Field(...)) for key in keys}
            )
            return list[turn]  # type: ignore[valid-type]
        if items and all(isinstance(item, list) and all(isinstance(x, str) for x in item) for item in items):
            return list[list[_text(limit)]]  # type: ignore[misc]  # Alpaca history: [[question, answer], ...]
        if all(isinstance(item, str) for item in items):
            return list[_text(limit)]  # type: ignore[misc]
    raise ForgeError(
        "The data holds a field whose values Forge cannot describe to the advisor (mixed or nested types).",
        fix="Expand a file whose recipe columns hold text, numbers or conversations (lists of messages).",
        code=ErrorCode.SYNTHETIC_UNSUPPORTED,
    )


def _text(limit: int) -> Any:
    from typing import Annotated

    return Annotated[str, Field(min_length=1, max_length=limit)]


def seed_fields(fields: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    """A record as the advisor sees it: the recipe's columns only."""
    return {column: fields.get(column) for column in columns}
