"""Speaker names in data -> chat roles: one table for detection (formats, threads) and for applying a
recipe (prepare), so what detection calls known is what prepare accepts."""

from __future__ import annotations

from forgellm.config.schema import RecipeSection
from forgellm.data.read.records import RecipeError

BUILTIN_ROLES: dict[str, str] = {
    "system": "system",
    "user": "user",
    "human": "user",
    "prompter": "user",  # OpenAssistant's message trees
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "function_call": "assistant",
    "observation": "user",
    "tool": "user",
    "function": "user",
}


def role_lookup(recipe: RecipeSection) -> dict[str, str]:
    """data.recipe.role_map with lower-case keys."""
    return {k.lower(): v for k, v in recipe.role_map.items()}


def lookup_role(raw: str, mapping: dict[str, str]) -> str:
    """``raw`` through ``mapping`` (a role_lookup), then the built-ins; RecipeError naming the fix."""
    key = raw.strip().lower()
    role = mapping.get(key) or BUILTIN_ROLES.get(key)
    if role is None:
        raise RecipeError(
            f"unknown role {raw!r}; add it to data.recipe.role_map, e.g. {{{raw}: user}} or {{{raw}: drop}}"
        )
    return role


def map_role(raw: str, recipe: RecipeSection) -> str:
    """A speaker name in the data -> system/user/assistant/drop (data.recipe.role_map, then the built-ins);
    RecipeError naming the fix when neither knows it."""
    return lookup_role(raw, role_lookup(recipe))
