"""Every shipped example is loaded and validated (a broken example is a broken promise)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forgellm.config.io import load_config
from forgellm.models.resolve import resolve_model
from forgellm.templates.preview import read_conversation

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("path", sorted((EXAMPLES / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_example_config_is_valid_and_its_model_resolves(path):
    loaded = load_config(path, environ={})
    assert loaded.migration_notes == []
    assert resolve_model(loaded.config.model.ref).kind in {"bundled", "hub"}


def test_there_are_example_configs():
    assert len(list((EXAMPLES / "configs").glob("*.yaml"))) >= 3


def test_support_chats_are_valid_conversations():
    path = EXAMPLES / "support_chats.jsonl"
    rows = path.read_text(encoding="utf-8").splitlines()
    assert len(rows) >= 20
    for number in range(1, len(rows) + 1):
        messages = read_conversation(path, number)
        assert [m["role"] for m in messages] == ["user", "assistant"]
        assert all(m["content"].strip() for m in messages)
    intents = {json.loads(r)["intent"] for r in rows}
    assert len(intents) == len(rows)
