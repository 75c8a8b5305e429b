"""Fixtures for inference tests: the tiny deterministic "Paris" models (defined in inference_support, which the
web tests import too) and one torch thread per test."""

from __future__ import annotations

import pytest
from inference.inference_support import (  # noqa: F401
    add_export,
    add_run,
    chat_project,
    lyon_adapter_dir,
    lyon_merged_dir,
    paris_model_dir,
    write_project,
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The tiny models gain nothing from threads; on a shared 2-core machine more only wait for each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
