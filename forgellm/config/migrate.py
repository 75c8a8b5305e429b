"""Upgrades of older forge.yaml layouts to the current schema version.

Each step takes the raw mapping of version N and returns version N+1 plus notes on what it changed,
so `forge config validate` can tell the user and `forge config upgrade` can rewrite the file.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from forgellm.config.schema import SCHEMA_VERSION
from forgellm.errors import ErrorCode, ForgeError

Raw = dict[str, Any]

# Version 1 was the pre-release layout: flat names borrowed from other trainers.
_V1_RENAMES: list[tuple[str, str, str]] = [
    ("model", "name", "ref"),
    ("training", "lr", "learning_rate"),
    ("training", "batch_size", "micro_batch_size"),
    ("training", "grad_accum", "gradient_accumulation"),
    ("training", "scheduler", "lr_scheduler"),
    ("training", "num_epochs", "epochs"),
]


def _v1_to_v2(raw: Raw) -> tuple[Raw, list[str]]:
    notes: list[str] = []
    for section, old, new in _V1_RENAMES:
        block = raw.get(section)
        if isinstance(block, dict) and old in block and new not in block:
            block[new] = block.pop(old)
            notes.append(f"renamed {section}.{old} -> {section}.{new}")
    model = raw.get("model")
    if isinstance(model, dict):
        template = model.get("chat_template")
        if isinstance(template, str):
            model["chat_template"] = {"name": template}
            notes.append("model.chat_template: a name became {name: ...}")
        if "system_prompt" in model:
            model.setdefault("chat_template", {})
            if isinstance(model["chat_template"], dict):
                model["chat_template"]["system_prompt"] = model.pop("system_prompt")
                notes.append("moved model.system_prompt -> model.chat_template.system_prompt")
    raw["version"] = 2
    return raw, notes


MIGRATIONS: dict[int, Callable[[Raw], tuple[Raw, list[str]]]] = {1: _v1_to_v2}


def migrate(raw: Raw) -> tuple[Raw, list[str]]:
    """Bring a raw forge.yaml mapping up to SCHEMA_VERSION; refuse files from a newer Forge."""
    version = raw.get("version", SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ForgeError(
            f"forge.yaml: `version` must be a whole number from 1 to {SCHEMA_VERSION}, got {version!r}.",
            fix=f"Set `version: {SCHEMA_VERSION}` at the top of forge.yaml.",
            code=ErrorCode.CONFIG_INVALID,
        )
    if version > SCHEMA_VERSION:
        raise ForgeError(
            f"forge.yaml is schema version {version}, but this Forge understands versions up to {SCHEMA_VERSION}: "
            "it was written by a newer Forge.",
            fix="Upgrade Forge (`pip install -U forgellm`) to use this project; nothing was changed.",
            code=ErrorCode.CONFIG_TOO_NEW, data={"version": version},
        )
    raw = copy.deepcopy(raw)
    notes: list[str] = []
    while version < SCHEMA_VERSION:
        raw, step_notes = MIGRATIONS[version](raw)
        notes += [f"v{version}->v{version + 1}: {n}" for n in step_notes]
        version += 1
    return raw, notes
