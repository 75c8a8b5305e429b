"""The training-memory estimator: hand-computed arithmetic, monotonic properties and verdicts."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forgellm.errors import ForgeError
from forgellm.hardware.memory import (
    ModelDims,
    count_params,
    estimate_training_memory,
    fit_for,
    fit_table,
    lora_trainable_params,
)
from forgellm.models.catalog import catalog, get_spec

GIB = 2**30
CUDA_CONTEXT = int(0.75 * GIB)  # 805306368
CPU_FRAMEWORK = int(0.4 * GIB)  # 429496729
NF4 = 4.127 / 8

# 2 layers, hidden 8, MLP 16, 2 heads of 4, 1 KV head, vocab 32, untied lm_head.
TINY = ModelDims(
    n_layers=2,
    hidden_size=8,
    intermediate_size=16,
    n_heads=2,
    n_kv_heads=1,
    vocab_size=32,
    tied_embeddings=False,
)


def test_tiny_counts_by_hand() -> None:
    # Per layer: q 8*8 + k 8*4 + v 8*4 + o 8*8 = 192; MLP 3*8*16 = 384. Embedding + lm_head 2*32*8 = 512.
    assert count_params(TINY) == (512 + 2 * 576, 512)
    # r=2: q 2*(8+8)=32, k 2*(8+4)=24, v 24, o 32, gate/up 2*(8+16)=48 each, down 48 -> 256 per layer.
    assert lora_trainable_params(TINY, 2, "all-linear") == 512
    assert lora_trainable_params(TINY, 2, "attention") == 2 * 112


def test_tiny_lora_bf16_checkpointed_cpu_exact() -> None:
    est = estimate_training_memory(
        TINY, method="lora", seq_len=4, micro_batch=2, precision="bf16", lora_r=2, device="cpu"
    )
    assert est.total_params == 1664 and est.trainable_params == 512
    assert est.weights_bytes == 1664 * 2 + 512 * 4 == 5376
    assert est.gradients_bytes == 512 * 4
    assert est.optimizer_bytes == 512 * 8
    # checkpointing: 4 tokens * 2 seqs * 2 bytes * (2 layers * 8 + 8*8 + 4*16) = 16 * 144
    assert est.activations_bytes == 2304
    assert est.logits_bytes == 4 * 2 * 32 * 4 * 2 == 2048
    subtotal = 5376 + 2048 + 4096 + 2304 + 2048  # 15872
    assert est.overhead_bytes == round(subtotal * 0.10 + CPU_FRAMEWORK) == 429498316
    assert est.total_bytes == round(subtotal * 1.10 + CPU_FRAMEWORK) == 429514188


def test_tiny_full_fp32_no_checkpointing_cuda_exact() -> None:
    est = estimate_training_memory(
        TINY,
        method="full",
        seq_len=4,
        micro_batch=2,
        precision="fp32",
        gradient_checkpointing=False,
        device="cuda",
    )
    assert est.trainable_params == 1664
    assert est.weights_bytes == 1664 * 4
    assert est.gradients_bytes == 1664 * 4
    assert est.optimizer_bytes == 1664 * 8  # no master copy: weights are already fp32
    assert est.activations_bytes == 4 * 2 * 4 * 2 * (8 * 8 + 4 * 16) == 8192
    subtotal = 6656 + 6656 + 13312 + 8192 + 2048
    assert est.total_bytes == round(subtotal * 1.10 + CUDA_CONTEXT) == 805346918


def test_tiny_full_bf16_adds_master_copy_and_qlora_weights() -> None:
    full = estimate_training_memory(TINY, method="full", seq_len=4, micro_batch=1, precision="bf16")
    assert full.weights_bytes == 1664 * 2
    assert full.optimizer_bytes == 1664 * (8 + 4)
    qlora = estimate_training_memory(TINY, method="qlora", seq_len=4, micro_batch=1, precision="bf16", lora_r=2)
    # NF4 for the 1152 linear weights, 16-bit embedding + lm_head, fp32 adapters.
    assert qlora.weights_bytes == round(1152 * NF4 + 512 * 2 + 512 * 4) == 3666


def test_smollm2_135m_matches_documented_formula() -> None:
    spec = get_spec("smollm2-135m")
    est = estimate_training_memory(
        spec,
        method="lora",
        seq_len=2048,
        micro_batch=1,
        precision="bf16",
        lora_r=16,
        lora_targets="all-linear",
        device="cuda",
    )
    # h=576, i=1536, L=30, 9 heads / 3 KV heads of 64 -> q 576, kv 192; vocab 49152, tied.
    params = 49152 * 576 + 30 * (576 * 576 + 2 * 576 * 192 + 576 * 576 + 3 * 576 * 1536)
    assert params == 134_479_872
    per_layer_lora = 16 * ((576 + 576) + 2 * (576 + 192) + (576 + 576) + 2 * (576 + 1536) + (1536 + 576))
    trainable = 30 * per_layer_lora
    assert trainable == 4_884_480
    weights = params * 2 + trainable * 4
    gradients = trainable * 4
    optimizer = trainable * 8
    activations = 2048 * 1 * 2 * (30 * 576 + 8 * 576 + 4 * 1536)
    logits = 2048 * 1 * 49152 * 4 * 2
    subtotal = weights + gradients + optimizer + activations + logits
    assert (est.total_params, est.trainable_params) == (params, trainable)
    assert (est.weights_bytes, est.gradients_bytes, est.optimizer_bytes) == (weights, gradients, optimizer)
    assert (est.activations_bytes, est.logits_bytes) == (activations, logits)
    assert est.total_bytes == round(subtotal * 1.10 + CUDA_CONTEXT)
    assert 2.0 * GIB < est.total_bytes < 2.1 * GIB  # ~0.75 GiB of it is fp32 logits


SPECS = catalog()


@given(
    spec=st.sampled_from(SPECS),
    method=st.sampled_from(["lora", "qlora", "full"]),
    seq=st.integers(1, 16384),
    batch=st.integers(1, 16),
    ckpt=st.booleans(),
)
def test_more_tokens_need_more_memory(spec, method, seq, batch, ckpt) -> None:
    def total(s: int, b: int) -> int:
        return estimate_training_memory(
            spec, method=method, seq_len=s, micro_batch=b, precision="bf16", gradient_checkpointing=ckpt
        ).total_bytes

    base = total(seq, batch)
    assert total(seq + 1, batch) > base
    assert total(seq, batch + 1) > base


@pytest.mark.parametrize("spec", SPECS, ids=[s.key for s in SPECS])
def test_method_and_setting_ordering(spec) -> None:
    def est(**kw):
        settings = {"method": "lora", "seq_len": 1024, "micro_batch": 2, "precision": "bf16", **kw}
        return estimate_training_memory(spec, **settings)

    assert est(method="qlora").total_bytes < est(method="lora").total_bytes < est(method="full").total_bytes
    checkpointed, stored = est(gradient_checkpointing=True), est(gradient_checkpointing=False)
    assert checkpointed.activations_bytes < stored.activations_bytes
    for method in ("lora", "full"):
        assert est(method=method, precision="fp32").weights_bytes > est(method=method).weights_bytes
    assert est(lora_targets="attention").trainable_params < est().trainable_params
    assert est(lora_r=8).trainable_params * 2 == est(lora_r=16).trainable_params


def test_7b_lora_fits_24gb_but_full_does_not(rtx4090) -> None:
    spec = get_spec("mistral-7b")
    lora = fit_for(spec, rtx4090, "lora", seq_len=2048, micro_batch=1, gradient_checkpointing=True)
    assert lora.verdict == "fits", lora.reason
    assert lora.estimate.precision == "bf16"  # Ada GPU: bf16 is preferred
    assert lora.budget_bytes == 24564 * 2**20
    full = fit_for(spec, rtx4090, "full", seq_len=2048, micro_batch=1)
    assert full.verdict == "no"
    assert "LoRA" in full.reason


def test_qlora_on_cpu_needs_gpu(cpu_only) -> None:
    fit = fit_for(get_spec("smollm2-135m"), cpu_only, "qlora")
    assert fit.verdict == "needs GPU"
    assert "NVIDIA GPU" in fit.reason and "CPU only" in fit.reason
    assert fit.estimate.total_bytes > 0  # the numbers are still shown


def test_cpu_budget_is_available_ram_and_precision_fp32(hardware_factory) -> None:
    hw = hardware_factory(ram_available_gib=2.0)
    fit = fit_for(get_spec("llama-3.2-1b"), hw, "lora", seq_len=512)
    assert fit.budget_source == "available RAM"
    assert fit.budget_bytes == 2 * GIB
    assert fit.estimate.precision == "fp32" and fit.estimate.device == "cpu"
    assert fit.verdict == "no"
    assert "QLoRA" not in fit.reason  # not offered where it cannot run


def test_tight_between_85_and_100_percent(hardware_factory, gpu_factory) -> None:
    spec = get_spec("qwen2.5-1.5b")
    need = estimate_training_memory(spec, method="lora", seq_len=1024, micro_batch=1, precision="bf16").total_bytes
    for share, verdict in ((0.5, "fits"), (0.9, "tight"), (1.05, "no")):
        hw = hardware_factory((gpu_factory(vram_gib=need / share / GIB),))
        assert fit_for(spec, hw, "lora").verdict == verdict, share


def test_largest_gpu_is_the_budget_and_busy_gpu_is_noted(hardware_factory, gpu_factory) -> None:
    small = gpu_factory(0, "Small", vram_gib=8)
    big = gpu_factory(1, "Big", vram_gib=48, free_gib=1)
    fit = fit_for(get_spec("qwen2.5-1.5b"), hardware_factory((small, big)), "lora")
    assert fit.budget_source == "GPU 1 (Big)"
    assert fit.verdict == "fits"
    assert "free now" in fit.reason


def test_turing_gpu_defaults_to_fp16(hardware_factory, gpu_factory) -> None:
    hw = hardware_factory((gpu_factory(name="Tesla T4", vram_gib=15, cc=(7, 5)),))
    assert fit_for(get_spec("smollm2-360m"), hw, "lora").estimate.precision == "fp16"


@pytest.mark.parametrize(
    "bad",
    [
        {"method": "dora"},
        {"precision": "fp8"},
        {"lora_targets": "mlp"},
        {"device": "tpu"},
        {"seq_len": 0},
        {"micro_batch": -1},
        {"lora_r": 0},
    ],
)
def test_bad_settings_raise_forge_error(bad) -> None:
    settings = {"method": "lora", "seq_len": 128, "micro_batch": 1, "precision": "bf16", **bad}
    with pytest.raises(ForgeError) as info:
        estimate_training_memory(TINY, **settings)
    assert next(iter(bad)) in info.value.message


def test_fit_table_rows(rtx4090, cpu_only) -> None:
    rows = fit_table(cpu_only, seq_len=512, micro_batch=1)
    assert [r.model for r in rows] == [s.key for s in catalog()]
    assert all(r.qlora.verdict == "needs GPU" for r in rows)
    gpu_rows = {r.model: r for r in fit_table(rtx4090, seq_len=2048)}
    assert gpu_rows["smollm2-135m"].full.verdict == "fits"
    assert gpu_rows["llama-3.1-8b"].full.verdict == "no"
    assert gpu_rows["llama-3.1-8b"].qlora.verdict == "fits"
    data = json.loads(json.dumps([r.to_dict() for r in rows]))
    assert set(data[0]) == {"model", "display_name", "params", "lora", "qlora", "full"}
    assert set(data[0]["lora"]) == {
        "model",
        "method",
        "verdict",
        "reason",
        "budget_bytes",
        "budget_source",
        "estimate",
    }
    assert "total_bytes" in data[0]["lora"]["estimate"]
