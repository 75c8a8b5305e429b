"""The time estimate: a FLOPs model calibrated on a CPU measurement, and the time budget."""

from __future__ import annotations

import pytest
from planning_support import make_gpu, make_hardware

from forgellm.planning import estimate as est

SMOLLM2_PARAMS = 134_515_008


def plan_time(hardware, **changes):
    settings = dict(
        params=SMOLLM2_PARAMS,
        method="lora",
        hardware=hardware,
        gradient_checkpointing=False,
        train_rows=4000,
        val_rows=200,
        mean_tokens=190.0,
        max_length=320,
        effective_batch=16,
        packing=True,
        epochs=2.0,
        max_steps=None,
        evaluations=5,
    )
    return est.estimate_time(**{**settings, **changes})


def test_cpu_figure_reproduces_the_measurement_it_was_calibrated_on():
    # NOTES.md: SmolLM2-135M, LoRA, fp32, 2 cores, no checkpointing: ~320 tokens/s.
    speed = est.training_throughput(SMOLLM2_PARAMS, "lora", make_hardware(cores=2), gradient_checkpointing=False)
    assert speed.tokens_per_second == pytest.approx(320, rel=1e-6)
    assert "calibrated" in speed.basis


def test_work_per_token_scales_the_speed():
    hw = make_hardware(cores=2)
    lora = est.training_throughput(SMOLLM2_PARAMS, "lora", hw, gradient_checkpointing=False).tokens_per_second
    full = est.training_throughput(SMOLLM2_PARAMS, "full", hw, gradient_checkpointing=False).tokens_per_second
    ckpt = est.training_throughput(SMOLLM2_PARAMS, "lora", hw, gradient_checkpointing=True).tokens_per_second
    four = est.training_throughput(SMOLLM2_PARAMS, "lora", make_hardware(cores=4), gradient_checkpointing=False)
    assert full == pytest.approx(lora * 4 / 6) and ckpt == pytest.approx(lora * 4 / 6)
    assert four.tokens_per_second == pytest.approx(2 * lora)


def test_gpus_are_ranked_by_their_peak():
    def speed(name, cc):
        hw = make_hardware((make_gpu(name, 24, cc),))
        return est.training_throughput(1_500_000_000, "lora", hw, gradient_checkpointing=True).tokens_per_second

    h100, a100, rtx3090 = (
        speed("NVIDIA H100 80GB HBM3", (9, 0)),
        speed("NVIDIA A100-SXM4-40GB", (8, 0)),
        speed("NVIDIA GeForce RTX 3090", (8, 6)),
    )
    assert h100 > a100 > rtx3090 > 1000  # a 1.5B LoRA on any of these trains thousands of tokens/s
    unknown = speed("NVIDIA Some Future Card", (8, 6))
    assert unknown > 0


def test_steps_follow_tokens_and_packing():
    cpu = make_hardware()
    packed = plan_time(cpu)
    assert packed.tokens_per_epoch == int(4000 * 190.0)
    assert packed.tokens_per_step == 16 * 320
    assert packed.steps_per_epoch * packed.tokens_per_step >= packed.tokens_per_epoch
    assert (packed.steps_per_epoch - 1) * packed.tokens_per_step < packed.tokens_per_epoch
    assert packed.total_steps == 2 * packed.steps_per_epoch
    unpacked = plan_time(cpu, packing=False)
    assert unpacked.steps_per_epoch == pytest.approx(4000 / 16, abs=1)


def test_budget_bounds_the_steps():
    cpu = make_hardware()
    full_run = plan_time(cpu)
    budget = full_run.seconds_total / 3
    steps = est.steps_within(budget, full_run)
    bounded = plan_time(cpu, max_steps=steps)
    assert steps < full_run.total_steps
    assert bounded.seconds_total <= budget
    # The largest number of steps that fits: one more would not.
    assert plan_time(cpu, max_steps=steps + 1).seconds_total > budget


def test_human_duration():
    assert est.human_duration(42) == "42 s"
    assert est.human_duration(30 * 60) == "30 min"
    assert est.human_duration(2 * 3600 + 5 * 60) == "2 h 05 min"
