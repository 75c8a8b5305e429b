"""Fixtures for inference tests: the tiny deterministic "Paris" models (defined in inference_support, which the
web tests import too) and one torch thread per test."""

from __future__ import annotations

from inference.inference_support import (  # noqa: F401
    _one_torch_thread,
    add_export,
    add_run,
    chat_project,
    lyon_adapter_dir,
    lyon_merged_dir,
    paris_model_dir,
    write_project,
)

