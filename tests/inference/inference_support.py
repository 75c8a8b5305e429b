"""Project, run and export folders for the inference tests (imported by tests/inference/conftest.py and tests)."""

from __future__ import annotations

import json
from pathlib import Path

from forgellm.config.io import save_config
from forgellm.config.schema import ForgeConfig


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
