"""Fixtures for template tests: the tiny in-memory fast tokenizer and the real bundled SmolLM2 one."""

from __future__ import annotations

import pytest
from templates_support import make_tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer_factory():
    return make_tokenizer


@pytest.fixture(scope="module")
def smollm_tokenizer(_bundled_model_cache):
    """The tokenizer of the bundled SmolLM2-135M-Instruct, as Forge uses it (from the converted folder)."""
    from transformers import AutoTokenizer

    _cache, folder = _bundled_model_cache
    return AutoTokenizer.from_pretrained(str(folder))
