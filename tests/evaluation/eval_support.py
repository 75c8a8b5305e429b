"""Helpers of the evaluation tests: projects with a finished run of a tiny model, ready to evaluate."""

from __future__ import annotations

import shutil
from pathlib import Path

from export.export_support import make_finished_run, write_adapter
from stage_support import staged
from tiny_project_support import TRAIN_DEFAULTS

from forgellm.config.io import save_config
from forgellm.config.schema import ForgeConfig

RUN_ID = "20261123-010000-lora-tiny"
SMALL = {"samples": 3, "max_new_tokens": 8, "max_examples": 12}  # fast, yet every part of the pipeline runs


def build_project(root: Path, model_dir: Path, data_csv: Path, *, strong_adapter: bool = True, **sections) -> Path:
    """A prepared project of ``model_dir`` with one completed run (as `tiny_train_project` +
    `make_finished_run` make them, but usable from session fixtures). ``sections`` override forge.yaml."""
    from forgellm.data.prepare.run import prepare_dataset

    root.mkdir(parents=True)
    data = {
        "model": {"ref": str(model_dir), "max_length": 256, "chat_template": {"name": "chatml"}},
        "training": dict(TRAIN_DEFAULTS),
        **sections,
    }
    save_config(ForgeConfig.model_validate(data), root / "forge.yaml")
    prepared = prepare_dataset(*staged(root), data_csv).output_dir
    run_dir = make_finished_run(root, prepared, model_dir, RUN_ID)
    if strong_adapter:  # a fresh 0.05-scale adapter barely changes what the tiny model writes; this one does
        shutil.rmtree(run_dir / "best")
        write_adapter(model_dir, run_dir / "best", scale=1.0)
    return root
