"""A tiny real Llama model folder and projects prepared for it, shared by the training, export and
inference tests (registered as fixtures by tests/conftest.py)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from stage_support import staged
from templates_support import make_tokenizer

from forgellm.config.io import save_config
from forgellm.config.schema import ForgeConfig

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TRAIN_DEFAULTS = {
    "method": "lora",
    "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
    "micro_batch_size": 4,
    "gradient_accumulation": 1,
    "learning_rate": 1e-3,
    "lr_scheduler": "constant",
    "warmup_ratio": 0.0,
    "max_steps": 20,
    "eval_every_steps": 5,
    "save_every_steps": 5,
    "precision": "fp32",
    "gradient_checkpointing": False,
}


@pytest.fixture(scope="session")
def tiny_causal_lm_dir(tmp_path_factory) -> Path:
    """A real, randomly initialised 2-layer LlamaForCausalLM with the byte-level chatml tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-causal-lm")
    tokenizer = make_tokenizer(bos="<|im_start|>", eos="<|im_end|>", pad="<|im_end|>", chat_template=CHATML)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _first_sentence(text: str, limit: int = 160) -> str:
    """Bitext answers run to ~1 kB; their first sentence keeps examples short for a byte tokenizer."""
    match = re.match(r"(.+?[.!?])(\s|$)", text.strip(), flags=re.S)
    sentence = (match.group(1) if match else text.strip())[:limit]
    return sentence.replace("\n", " ")


def write_support_csv(path: Path, rows: int = 200) -> Path:
    """The first `rows` real question/answer pairs of the Bitext customer-support set, answers shortened."""
    source = SHARED_DATA / "bitext_customer_support.csv"
    if not source.is_file():
        pytest.skip(f"the shared data sets are not at {SHARED_DATA}")
    with open(source, newline="", encoding="utf-8") as handle, open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["instruction", "response"])
        for number, row in enumerate(csv.DictReader(handle)):
            if number >= rows:
                break
            writer.writerow([row["instruction"], _first_sentence(row["response"])])
    return path


@pytest.fixture(scope="session")
def _support_csv(tmp_path_factory) -> Path:
    return write_support_csv(tmp_path_factory.mktemp("support-data") / "support.csv")


@pytest.fixture
def tiny_train_project(tmp_path, tiny_causal_lm_dir, _support_csv):
    """Factory: a project folder targeting the tiny model, with prepared data -> (root, prepared_dir).

    Keyword arguments override `training:` settings, e.g. ``tiny_train_project(packing=False, max_steps=8)``;
    ``model={...}`` overrides the model section.
    """
    from forgellm.data.prepare.run import prepare_dataset

    counter = iter(range(1000))

    def build(*, model: dict | None = None, **training) -> tuple[Path, Path]:
        root = tmp_path / f"project-{next(counter)}"
        root.mkdir(parents=True)
        data = {
            "model": {"ref": str(tiny_causal_lm_dir), "max_length": 256, "chat_template": {"name": "chatml"}},
            "training": {**TRAIN_DEFAULTS, **training},
        }
        data["model"].update(model or {})
        save_config(ForgeConfig.model_validate(data), root / "forge.yaml")
        result = prepare_dataset(*staged(root), _support_csv)
        return root, result.output_dir

    return build
