"""Tiny models, projects, runs and exports for the inference and web tests (their conftest and test modules
import the fixtures from here).

The "Paris" model is a 1-layer Llama whose layer adds nothing (zeroed output projections), with one-hot
embeddings and an lm_head that is a next-byte table: after the "\\n" that ends the chatml generation
prompt it spells "Paris", then <|im_end|>. A LoRA adapter on lm_head rewires the table to spell "Lyon",
so base, base + adapter and the merged model each give a known answer, greedy or sampled.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from templates_support import make_tokenizer

from forgellm.config.io import save_config
from forgellm.config.schema import ForgeConfig

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CONTEXT = 512


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The tiny models gain nothing from threads; on a shared 2-core machine more only wait for each other.
    Autouse wherever it is imported (the inference conftest, the API tests)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tokenizer():
    return make_tokenizer(bos="<|im_start|>", eos="<|im_end|>", pad="<|im_end|>", chat_template=CHATML)


def _byte_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _table_model(tokenizer):
    """A model whose next token depends only on the current one (a bigram table in lm_head)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    size = len(tokenizer)
    config = LlamaConfig(
        vocab_size=size, hidden_size=size, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1,
        num_key_value_heads=1, head_dim=8, max_position_embeddings=CONTEXT, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.model.embed_tokens.weight.copy_(torch.eye(size))
        for norm in (model.model.norm, *(m for layer in model.model.layers for m in layer.children())):
            if hasattr(norm, "variance_epsilon"):
                norm.weight.fill_(1.0)
        model.lm_head.weight[tokenizer.eos_token_id, :] = 1.0  # any other token: end the turn
    return model


def _transitions(tokenizer, word: str) -> list[tuple[int, int]]:
    """(token, next token) pairs that spell `word` after a newline, then end the turn."""
    chain = _byte_ids(tokenizer, "\n" + word) + [tokenizer.eos_token_id]
    return list(zip(chain, chain[1:], strict=False))


def _wire(model, transitions: list[tuple[int, int]]) -> None:
    import torch

    with torch.no_grad():
        weight = model.lm_head.weight
        for source, target in transitions:
            weight[:, source] = 0.0
            weight[target, source] = 1.0


@pytest.fixture(scope="session")
def paris_model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("paris-model")
    tokenizer = _tokenizer()
    model = _table_model(tokenizer)
    _wire(model, _transitions(tokenizer, "Paris"))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def lyon_adapter_dir(tmp_path_factory, paris_model_dir) -> Path:
    """A LoRA adapter over the Paris model (on lm_head) that makes it answer "Lyon"."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("lyon-adapter")
    tokenizer = _tokenizer()
    base = AutoModelForCausalLM.from_pretrained(str(paris_model_dir))
    old = base.lm_head.weight.detach().clone()
    changes = _transitions(tokenizer, "Lyon")[:-1]  # the last step (to end-of-turn) is already the default
    peft_model = get_peft_model(base, LoraConfig(r=len(changes), lora_alpha=len(changes), target_modules=["lm_head"]))
    layer = peft_model.base_model.model.lm_head
    with torch.no_grad():
        lora_a, lora_b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        lora_a.zero_()
        lora_b.zero_()
        for rank, (source, target) in enumerate(changes):
            lora_a[rank, source] = 1.0
            lora_b[:, rank] = -old[:, source]
            lora_b[target, rank] += 1.0
    peft_model.save_pretrained(folder, save_embedding_layers=False)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def lyon_merged_dir(tmp_path_factory, paris_model_dir) -> Path:
    """The Paris model with the Lyon table wired in: what an export's merged/ folder holds."""
    folder = tmp_path_factory.mktemp("lyon-merged")
    tokenizer = _tokenizer()
    model = _table_model(tokenizer)
    _wire(model, _transitions(tokenizer, "Paris") + _transitions(tokenizer, "Lyon"))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def chat_project(tmp_path, paris_model_dir, lyon_adapter_dir, lyon_merged_dir):
    """Factory: a project on the Paris model, with a LoRA run (answers Lyon) and/or an export (Lyon)."""

    def build(*, run: bool = False, export: bool = False, name: str = "bot") -> Path:
        root = write_project(tmp_path / name, str(paris_model_dir))
        if run:
            add_run(root, lyon_adapter_dir, paris_model_dir)
        if export:
            add_export(root, lyon_merged_dir)
        return root

    return build


def write_project(root: Path, model_ref: str, *, chat_template: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    data = {"model": {"ref": model_ref, "max_length": 256, "chat_template": chat_template or {"name": "chatml"}}}
    save_config(ForgeConfig.model_validate(data), root / "forge.yaml")
    return root


def add_run(root: Path, weights: Path, base_dir: Path, run_id: str = "20260101-000000-lora-paris") -> Path:
    """A finished run as `forge train` leaves it: run.json, config.yaml, summary.json, best/."""
    import shutil

    from forgellm.config.io import load_config
    from forgellm.project.layout import RUN_CONFIG
    from forgellm.project.run_record import RunSpec

    run_dir = root / "runs" / run_id
    run_dir.mkdir(parents=True)
    RunSpec(run_id, str(root), str(root / "data"), str(base_dir), "tiny").save(run_dir)
    save_config(load_config(root / "forge.yaml").config, run_dir / RUN_CONFIG)
    (run_dir / "summary.json").write_text(json.dumps({"status": "completed"}), encoding="utf-8")
    shutil.copytree(weights, run_dir / "best")
    return run_dir


def add_export(root: Path, merged: Path, name: str = "lyon-bot", gguf: Path | None = None) -> Path:
    """An export folder as `forge export` leaves it (merged/, metadata.json, optionally a GGUF); the
    model files are links, so a test can borrow the bundled model without copying 300 MB."""
    folder = root / "exports" / name
    folder.mkdir(parents=True)
    (folder / "merged").symlink_to(merged, target_is_directory=True)
    ggufs = {}
    if gguf is not None:
        (folder / f"{name}-q4_1.gguf").symlink_to(gguf)
        ggufs["q4_1"] = f"{name}-q4_1.gguf"
    metadata = {
        "name": name, "base_model": "paris", "training_type": "lora", "run_id": "r", "checkpoint": "best",
        "chat_template": {"name": "chatml", "system_prompt": None, "add_bos": None, "role_names": {}, "jinja": None},
        "files": {"merged": "merged", "gguf": ggufs, "modelfile": None}, "stop": ["<|im_end|>"], "num_ctx": 2048,
    }  # fmt: skip
    (folder / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    return folder
