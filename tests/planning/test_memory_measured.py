"""The memory estimator against reality: peak RSS of a fresh process training the bundled SmolLM2-135M.

Full fine-tuning, fp32, AdamW, gradient checkpointing, CPU: two optimizer steps (the second step's
backward is the peak: weights, gradients and both Adam moments coexist with the activations).
The measurement is benchmarks/memory_estimate.py's, so the benchmark and this test agree.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "memory_estimate.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("memory_estimate_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("seq_len", [256, 1024])
def test_estimate_within_25_percent_of_measured_peak(bundled_model_dir, seq_len):
    row = _benchmark().compare(bundled_model_dir, seq_len, micro_batch=1, checkpointing=True, steps=2)
    assert row["steps"] == 2 and row["final_loss"] > 0  # it really trained
    assert 0.75 <= row["ratio"] <= 1.25, (
        f"estimate {row['estimate_bytes'] / 2**20:,.0f} MB vs measured {row['peak_rss_bytes'] / 2**20:,.0f} MB "
        f"at seq {seq_len}: {row['estimate']}"
    )
