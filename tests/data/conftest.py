"""Fixtures for data tests: the shared real data sets, a tiny tokenizer-only model, project folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from templates_support import make_tokenizer

from forgellm.config.io import save_config
from forgellm.config.schema import ForgeConfig

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared data sets are not at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A model folder with config.json and a byte-level tokenizer: all that `prepare` loads."""
    folder = tmp_path_factory.mktemp("tiny-model")
    tokenizer = make_tokenizer(bos="<|im_start|>", eos="<|im_end|>", pad="<|im_end|>", chat_template=CHATML)
    tokenizer.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    return folder


@pytest.fixture
def make_project(tmp_path, tiny_model_dir):
    """A project folder whose forge.yaml targets the tiny model; keyword overrides per section."""

    def build(name: str = "project", **sections) -> Path:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        data = {"model": {"ref": str(tiny_model_dir), "max_length": 512}}
        for section, values in sections.items():
            data.setdefault(section, {}).update(values)
        save_config(ForgeConfig.model_validate(data), root / "forge.yaml")
        return root

    return build
