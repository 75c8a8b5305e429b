"""Fixtures for training tests (the tiny model and prepared projects live in tests/tiny_project_support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_project_support import CHATML, SHARED_DATA, TRAIN_DEFAULTS, write_support_csv  # noqa: F401

from forgellm.config.io import save_config


def make_run_dir(root: Path, prepared_dir: Path, name: str = "run-1", **training) -> Path:
    """A run folder as the supervisor writes it (run.json + config.yaml snapshot); ``training`` overrides."""
    from forgellm.config.io import load_config
    from forgellm.project.layout import RUN_CONFIG
    from forgellm.project.run_record import RunSpec
    from forgellm.training.data import read_manifest_tokenizer

    config = load_config(root / "forge.yaml", environ={}).config
    for key, value in training.items():
        setattr(config.training, key, value)
    run_dir = root / "runs" / name
    run_dir.mkdir(parents=True)
    RunSpec(name, str(root), str(prepared_dir), config.model.ref, read_manifest_tokenizer(prepared_dir)).save(run_dir)
    save_config(config, run_dir / RUN_CONFIG)
    return run_dir


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: the tiny model's matrices are too small to gain from more, and on a shared
    2-core machine extra threads only wait for each other (a 64x slower mask build was measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def rehearsal(monkeypatch):
    """A multi-GPU run rehearsed on this GPU-less machine: one CPU process per "GPU" over gloo."""
    monkeypatch.setenv("FORGE_DISTRIBUTED_CPU", "1")
