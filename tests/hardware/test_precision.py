"""The one decision of precision: rules per machine, forced values checked, measurements chosen and cached."""

from __future__ import annotations

import pytest
from conftest import make_gpu, make_hardware

from forgellm.errors import ForgeError
from forgellm.hardware.precision import (
    Measurement,
    cached_decision,
    check_requested,
    choose_measured,
    decide_precision,
    inference_precision,
    rule_precision,
    store_decision,
)

CPU_BF16 = "flags\t: fpu sse avx2 avx512f avx512_bf16\n"
CPU_PLAIN = "flags\t: fpu sse avx2\n"
SHAPE = "LoRA r4, 4 x 320 tokens"


@pytest.mark.parametrize(
    ("gpus", "cpuinfo", "expected"),
    [
        ((), CPU_PLAIN, "fp32"),
        ((), CPU_BF16, "fp32"),  # native bf16 is measured, never assumed
        ((make_gpu(cc=(8, 9)),), CPU_PLAIN, "bf16"),
        ((make_gpu(name="Tesla T4", cc=(7, 5)),), CPU_BF16, "fp16"),
    ],
    ids=["cpu", "cpu-with-bf16", "cuda-bf16", "cuda-no-bf16"],
)
def test_rule_per_machine(gpus, cpuinfo, expected):
    hardware = make_hardware(gpus, cpuinfo=cpuinfo)
    decision = rule_precision(hardware)
    assert decision.precision == expected and decision.source == "rule"
    assert hardware.preferred_precision == expected  # forge hardware's figure is the same function's
    assert decide_precision(hardware).precision == expected


def test_forced_fp16_on_cpu_is_refused_with_the_fix():
    with pytest.raises(ForgeError) as caught:
        check_requested("fp16", make_hardware(cpuinfo=CPU_BF16))
    assert "needs CUDA" in caught.value.message and "training.precision" in caught.value.fix


def test_forced_bf16_on_cpu_without_bf16_is_refused_with_the_fix():
    with pytest.raises(ForgeError) as caught:
        decide_precision(make_hardware(cpuinfo=CPU_PLAIN), "bf16")
    assert "no bf16 instructions" in caught.value.message and "fp32" in caught.value.fix


def test_forced_bf16_on_an_old_gpu_is_refused():
    with pytest.raises(ForgeError, match="has no bf16"):
        check_requested("bf16", make_hardware((make_gpu(name="Tesla T4", cc=(7, 5)),)))


def test_forced_values_that_work_are_the_users():
    decision = decide_precision(make_hardware(cpuinfo=CPU_BF16), "bf16")
    assert decision.precision == "bf16" and decision.source == "user"
    assert decide_precision(make_hardware(cpuinfo=CPU_PLAIN), "fp32").precision == "fp32"


def _measured(fp32: float, bf16: float, bf16_loss: float | None = 10.0) -> list[Measurement]:
    return [Measurement("fp32", fp32, 1.0, 10.0), Measurement("bf16", bf16, 1.0, bf16_loss)]


def test_faster_stable_bf16_is_chosen():
    decision = choose_measured(_measured(200, 300, 10.05), SHAPE)
    assert decision.precision == "bf16" and decision.source == "measured"
    assert decision.tokens_per_second == 300
    assert "1.50x" in decision.reason and SHAPE in decision.reason


def test_slower_or_tied_bf16_leaves_fp32():
    assert choose_measured(_measured(300, 140), SHAPE).precision == "fp32"
    assert choose_measured(_measured(300, 310), SHAPE).precision == "fp32"  # within 5%: the exact one


def test_unstable_bf16_is_not_chosen_however_fast():
    assert choose_measured(_measured(200, 400, 10.5), SHAPE).precision == "fp32"
    decision = choose_measured(_measured(200, 400, None), SHAPE)
    assert decision.precision == "fp32" and "not stable" in decision.reason


def test_a_measurement_is_cached_per_machine_and_model():
    machine = make_hardware(cpuinfo=CPU_BF16)
    store_decision(machine, "smollm2-135m", choose_measured(_measured(200, 300), SHAPE))
    assert decide_precision(machine, model_key="smollm2-135m").precision == "bf16"
    assert cached_decision(machine, "smollm2-135m", SHAPE).tokens_per_second == 300
    assert decide_precision(machine, model_key="qwen2.5-0.5b").precision == "fp32"  # another model: not measured
    other_machine = make_hardware(cpuinfo=CPU_PLAIN)
    assert decide_precision(other_machine, model_key="smollm2-135m").source == "rule"
    assert decide_precision(machine, "fp32", model_key="smollm2-135m").precision == "fp32"  # forced wins


def test_a_damaged_cache_is_ignored(isolated_forge_home):
    (isolated_forge_home / "calibration.json").write_text("{not json", encoding="utf-8")
    machine = make_hardware(cpuinfo=CPU_BF16)
    assert decide_precision(machine, model_key="smollm2-135m").source == "rule"
    store_decision(machine, "smollm2-135m", choose_measured(_measured(200, 300), SHAPE))
    assert decide_precision(machine, model_key="smollm2-135m").precision == "bf16"


def test_inference_runs_fp32_on_cpu_and_the_training_precision_on_gpu():
    assert inference_precision(make_hardware(cpuinfo=CPU_BF16)) == "fp32"
    assert inference_precision(make_hardware((make_gpu(cc=(9, 0)),))) == "bf16"
