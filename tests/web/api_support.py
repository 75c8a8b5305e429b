"""A project with every kind of model a Forge server offers, on the tiny deterministic Paris/Lyon models
(tests/inference/inference_support.py): the base (answers "Paris"), a LoRA run and an export (both
"Lyon"), a continued-pre-training run (completion mode), and an export whose weights are damaged."""

from __future__ import annotations

import shutil
from pathlib import Path

from inference.inference_support import add_export, add_run, write_project

RUN_ID = "20260101-000000-lora-paris"
CPT_RUN_ID = "20260102-000000-lora-cpt"
BROKEN = "broken-bot"


def model_project(root: Path, paris: Path, lyon_adapter: Path, lyon_merged: Path) -> Path:
    from forgellm.config.io import load_config, save_config
    from forgellm.project.layout import RUN_CONFIG

    write_project(root, str(paris))
    add_run(root, lyon_adapter, paris, RUN_ID)
    cpt = add_run(root, lyon_adapter, paris, CPT_RUN_ID)
    config = load_config(cpt / RUN_CONFIG).config
    config.training.stage = "cpt"
    save_config(config, cpt / RUN_CONFIG)
    add_export(root, lyon_merged)
    broken = root / "broken-merged"
    broken.mkdir()
    for name in paris.iterdir():  # the tokenizer and config.json read fine; the weights do not
        if name.suffix != ".safetensors":
            shutil.copy(name, broken / name.name)
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    add_export(root, broken, name=BROKEN)
    return root


def looping_model(folder: Path) -> Path:
    """A Paris-family model that answers "a" without end (its context made long): an answer that runs until a
    limit or until the client leaves."""
    from inference.inference_support import _table_model, _tokenizer, _wire

    tokenizer = _tokenizer()
    model = _table_model(tokenizer)
    newline, letter = tokenizer("\na", add_special_tokens=False)["input_ids"]
    _wire(model, [(newline, letter), (letter, letter)])
    model.config.max_position_embeddings = 1_000_000
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
