"""Projects with a finished run to export: the tiny Llama with a real, non-trivial LoRA adapter in best/."""

from __future__ import annotations

import pytest
from export.export_support import make_finished_run


@pytest.fixture
def exportable_project(tiny_train_project, tiny_causal_lm_dir):
    """-> (project root, run dir): a prepared tiny project with one completed run."""
    root, prepared = tiny_train_project()
    return root, make_finished_run(root, prepared, tiny_causal_lm_dir)
