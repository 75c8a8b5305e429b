"""Applying a Fix (dotted forge.yaml keys -> values) to a config: a new, validated ForgeConfig or a
ForgeError saying which change would make forge.yaml invalid. Used by diagnosis (to validate what it
proposes), healing (to change the run's snapshot) and the LLM advisors' answers."""

from __future__ import annotations

from typing import Any

from forgellm.advisor.schemas import Fix
from forgellm.config.schema import ForgeConfig
from forgellm.errors import ErrorCode, ForgeError


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = data
    for i, part in enumerate(parents):
        child = node.get(part)
        if not isinstance(child, dict):
            raise ForgeError(
                f"'{key}' is not a key of forge.yaml ('{'.'.join(parents[: i + 1])}' is not a section).",
                fix="Use dotted keys of existing settings, e.g. training.micro_batch_size.",
                code=ErrorCode.CONFIG_INVALID,
            )
        node = child
    node[last] = value


def apply_fix(config: ForgeConfig, fix: Fix) -> ForgeConfig:
    """A new, validated config with ``fix``'s changes; ForgeError when they would make it invalid."""
    from pydantic import ValidationError

    data = config.model_dump(mode="json")
    try:
        return ForgeConfig.model_validate(_changed(data, fix, wrap_lists=False))
    except ValidationError as exc:
        error = exc
    # A scalar given for a list setting (export.quantizations: q8_0) means a list of that one value.
    try:
        return ForgeConfig.model_validate(_changed(data, fix, wrap_lists=True))
    except ValidationError:
        pass
    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:3])
    keys = ", ".join(c.key for c in fix.changes)
    raise ForgeError(
        f"The proposed change ({keys}) would make forge.yaml invalid: {problems}.",
        fix="Edit forge.yaml by hand; `forge plan` can write a fresh one.",
        code=ErrorCode.CONFIG_INVALID,
    )


def _changed(data: dict[str, Any], fix: Fix, *, wrap_lists: bool) -> dict[str, Any]:
    import copy

    data = copy.deepcopy(data)
    for change in fix.changes:
        value = change.value
        if wrap_lists and isinstance(_current(data, change.key), list):
            value = [value]
        _set_dotted(data, change.key, value)
    return data


def _current(data: dict[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
