"""Per-GPU memory for DDP / FSDP / ZeRO-3 against the arithmetic written out, and the strategy choice."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forgellm.errors import ErrorCode, ForgeError
from forgellm.hardware.memory import estimate_training_memory
from forgellm.hardware.parallel_memory import STRATEGIES, choose_strategy, estimate_per_gpu
from forgellm.models.dims import ModelDims

GIB = 2**30
CUDA_CONTEXT = int(0.75 * GIB)
NF4 = 4.127 / 8

# A llama-like 7B (Llama-2-7B's shape): 32 layers, hidden 4096, MLP 11008, 32 heads, vocab 32000, untied.
LLAMA_7B = ModelDims(n_layers=32, hidden_size=4096, intermediate_size=11008, n_heads=32, n_kv_heads=32,
                     vocab_size=32000, tied_embeddings=False)  # fmt: skip
# Per layer: q, k, v, o 4 * 4096^2 = 67,108,864; gate, up, down 3 * 4096 * 11008 = 135,266,304.
LLAMA_LAYER = 4 * 4096 * 4096 + 3 * 4096 * 11008  # 202,375,168
LLAMA_EMBED = 2 * 32000 * 4096  # embeddings + lm_head = 262,144,000
LLAMA_P = 32 * LLAMA_LAYER + LLAMA_EMBED  # 6,738,149,376

# A small one: 4 layers, hidden 64, MLP 128, 4 heads of 16, 2 KV heads, vocab 1000, tied.
SMALL = ModelDims(n_layers=4, hidden_size=64, intermediate_size=128, n_heads=4, n_kv_heads=2, vocab_size=1000,
                  tied_embeddings=True)  # fmt: skip
# Per layer: q 64*64 + k 64*32 + v 64*32 + o 64*64 = 12,288; MLP 3 * 64 * 128 = 24,576.
SMALL_LAYER = 12_288 + 24_576  # 36,864
SMALL_EMBED = 1000 * 64

SHAPE = {"seq_len": 1024, "micro_batch": 1, "precision": "bf16"}


def overhead(on_gpu: int) -> int:
    return round(on_gpu * 0.10) + CUDA_CONTEXT


def test_the_dims_count_as_written() -> None:
    single = estimate_training_memory(LLAMA_7B, method="full", **SHAPE)
    assert single.total_params == LLAMA_P == 6_738_149_376
    assert estimate_training_memory(SMALL, method="full", **SHAPE).total_params == 4 * SMALL_LAYER + SMALL_EMBED


def test_none_is_the_single_estimate() -> None:
    single = estimate_training_memory(LLAMA_7B, method="lora", **SHAPE)
    none = estimate_per_gpu(LLAMA_7B, strategy="none", world_size=1, method="lora", **SHAPE)
    assert none.per_gpu_bytes == single.total_bytes
    assert none.buffers_bytes == 0 and none.cpu_bytes_per_node == 0


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_ddp_is_a_replica_plus_gradient_buckets(method: str) -> None:
    single = estimate_training_memory(LLAMA_7B, method=method, **SHAPE)
    ddp = estimate_per_gpu(LLAMA_7B, strategy="ddp", world_size=8, method=method, **SHAPE)
    buckets = single.trainable_params * 4  # a flat fp32 copy of every trainable gradient
    on_gpu = (single.weights_bytes + single.gradients_bytes + single.optimizer_bytes + single.activations_bytes
              + single.logits_bytes + buckets)  # fmt: skip
    assert ddp.buffers_bytes == buckets
    assert ddp.per_gpu_bytes == on_gpu + overhead(on_gpu)
    assert (ddp.weights_bytes, ddp.optimizer_bytes) == (single.weights_bytes, single.optimizer_bytes)


def test_fsdp_full_fine_tune_of_7b_on_8_gpus_by_hand() -> None:
    p, n = LLAMA_P, 8
    weights, grads, optim = p * 2, p * 4, p * 12  # bf16 weights; fp32 gradients; Adam moments + fp32 master
    fsdp = estimate_per_gpu(LLAMA_7B, strategy="fsdp", world_size=n, method="full", **SHAPE)
    assert (fsdp.weights_bytes, fsdp.gradients_bytes, fsdp.optimizer_bytes) == (weights // n, grads // n, optim // n)
    # Two decoder layers gathered in bf16 (the one computing, the one prefetched) + the root unit's embeddings
    # and lm_head, gathered through the step.
    assert fsdp.buffers_bytes == 2 * LLAMA_LAYER * 2 + LLAMA_EMBED * 2
    # Activations (checkpointing): 1024 tokens * 2 bytes * (32 * 4096 + 8 * 4096 + 4 * 11008); logits 1024 * 32000 * 8.
    activations = 1024 * 2 * (32 * 4096 + 8 * 4096 + 4 * 11008)
    logits = 1024 * 32000 * 4 * 2
    assert (fsdp.activations_bytes, fsdp.logits_bytes) == (activations, logits)
    on_gpu = (weights + grads + optim) // n + fsdp.buffers_bytes + activations + logits
    assert fsdp.per_gpu_bytes == on_gpu + overhead(on_gpu)
    assert 18 * GIB < fsdp.per_gpu_bytes < 19 * GIB  # ~18.4 GiB each, against ~127 GiB on one device


def test_fsdp_lora_shards_the_frozen_base_and_gathers_adapters() -> None:
    single = estimate_training_memory(SMALL, method="lora", lora_r=8, **SHAPE)
    t = single.trainable_params
    # LoRA r=8 on all 7 linears: 8 * (in + out) summed = 8 * (128 + 96 + 96 + 128 + 192 + 192 + 192) per layer.
    assert t == 4 * 8 * (128 + 96 + 96 + 128 + 192 + 192 + 192)
    fsdp = estimate_per_gpu(SMALL, strategy="fsdp", world_size=4, method="lora", lora_r=8, **SHAPE)
    base = (4 * SMALL_LAYER + SMALL_EMBED) * 2
    assert fsdp.weights_bytes == -(-(base + t * 4) // 4)
    assert fsdp.gradients_bytes == t * 4 // 4 and fsdp.optimizer_bytes == t * 8 // 4
    assert fsdp.buffers_bytes == 2 * (SMALL_LAYER * 2 + t // 4 * 4) + SMALL_EMBED * 2


def test_deepspeed_partitions_as_fsdp() -> None:
    fsdp = estimate_per_gpu(LLAMA_7B, strategy="fsdp", world_size=4, method="lora", **SHAPE)
    zero3 = estimate_per_gpu(LLAMA_7B, strategy="deepspeed", world_size=4, method="lora", **SHAPE)
    assert zero3.per_gpu_bytes == fsdp.per_gpu_bytes


def test_qlora_base_stays_whole_under_fsdp2_but_zero3_partitions_it() -> None:
    single = estimate_training_memory(LLAMA_7B, method="qlora", **SHAPE)
    adapters = single.trainable_params * 4
    base = single.weights_bytes - adapters
    assert base == round(32 * LLAMA_LAYER * NF4 + LLAMA_EMBED * 2)
    fsdp = estimate_per_gpu(LLAMA_7B, strategy="fsdp", world_size=4, method="qlora", **SHAPE)
    assert fsdp.weights_bytes == base + adapters // 4  # only the adapters are sharded
    assert fsdp.buffers_bytes == 2 * (single.trainable_params // 32 * 4)
    zero3 = estimate_per_gpu(LLAMA_7B, strategy="deepspeed", world_size=4, method="qlora", **SHAPE)
    assert zero3.weights_bytes == -(-single.weights_bytes // 4)


def test_offload_moves_the_shards_to_cpu_ram() -> None:
    fsdp = estimate_per_gpu(LLAMA_7B, strategy="fsdp", world_size=8, method="full", **SHAPE)
    off = estimate_per_gpu(LLAMA_7B, strategy="fsdp", world_size=8, offload=True, gpus_per_node=4, method="full",
                           **SHAPE)  # fmt: skip
    shards = fsdp.weights_bytes + fsdp.gradients_bytes + fsdp.optimizer_bytes
    assert off.cpu_bytes_per_node == shards * 4  # 2 machines of 4 GPUs: each holds its 4 processes' shards
    assert (off.weights_bytes, off.gradients_bytes, off.optimizer_bytes) == (0, 0, 0)
    on_gpu = fsdp.buffers_bytes + fsdp.activations_bytes + fsdp.logits_bytes
    assert off.per_gpu_bytes == on_gpu + overhead(on_gpu)
    assert fsdp.cpu_bytes_per_node == 0


@settings(max_examples=40, deadline=None)
@given(
    world=st.integers(1, 64),
    method=st.sampled_from(["full", "lora", "qlora"]),
    strategy=st.sampled_from(["fsdp", "deepspeed"]),
    offload=st.booleans(),
    seq_len=st.integers(64, 8192),
)
def test_sharded_memory_never_grows_with_world_size_nor_drops_below_activations(world, method, strategy, offload,
                                                                                seq_len) -> None:  # fmt: skip
    shape = {**SHAPE, "seq_len": seq_len, "method": method}
    fewer = estimate_per_gpu(LLAMA_7B, strategy=strategy, world_size=world, offload=offload, **shape)
    more = estimate_per_gpu(LLAMA_7B, strategy=strategy, world_size=world + 1, offload=offload, **shape)
    assert more.per_gpu_bytes <= fewer.per_gpu_bytes
    assert more.per_gpu_bytes >= more.activations_bytes + more.logits_bytes + CUDA_CONTEXT


def test_bad_settings_say_which() -> None:
    with pytest.raises(ForgeError) as offload:
        estimate_per_gpu(SMALL, strategy="ddp", world_size=2, offload=True, method="lora", **SHAPE)
    assert offload.value.code == ErrorCode.USAGE_INVALID and "offload" in offload.value.message
    with pytest.raises(ForgeError):
        estimate_per_gpu(SMALL, strategy="zero9", world_size=2, method="lora", **SHAPE)
    with pytest.raises(ForgeError):
        estimate_per_gpu(SMALL, strategy="none", world_size=2, method="lora", **SHAPE)
    with pytest.raises(ForgeError):
        choose_strategy(SMALL, requested="auto", gpus=0, nodes=1, gpu_bytes=GIB, method="lora", **SHAPE)
    assert STRATEGIES == ("none", "ddp", "fsdp", "deepspeed")


# --- choose_strategy: the thresholds are the per-GPU figures against 85% of the GPU


def auto(method: str, gpus: int, gpu_gib: float, **kw):
    return choose_strategy(LLAMA_7B, requested="auto", gpus=gpus, nodes=kw.pop("nodes", 1),
                           gpu_bytes=round(gpu_gib * GIB), method=method, **{**SHAPE, **kw})  # fmt: skip


def per_gpu(strategy: str, method: str, world: int, offload: bool = False) -> int:
    return estimate_per_gpu(LLAMA_7B, strategy=strategy, world_size=world, offload=offload, method=method,
                            **SHAPE).per_gpu_bytes  # fmt: skip


def test_one_gpu_is_none() -> None:
    choice = auto("full", 1, 80)
    assert (choice.strategy, choice.gpus, choice.nodes) == ("none", 1, 1)
    assert choice.reason.startswith("One GPU")


def test_ddp_when_a_replica_fits_and_its_reason_gives_the_figures() -> None:
    choice = auto("lora", 4, 80)
    assert (choice.strategy, choice.gpus, choice.offload) == ("ddp", 4, False)
    assert choice.per_gpu_bytes == per_gpu("ddp", "lora", 4)
    assert f"~{per_gpu('ddp', 'lora', 4) / GIB:.1f} GiB per GPU of 80 GiB" in choice.reason
    assert "full copy" in choice.reason


def test_thresholds_between_ddp_fsdp_offload_and_error() -> None:
    ddp, fsdp, off = per_gpu("ddp", "full", 8), per_gpu("fsdp", "full", 8), per_gpu("fsdp", "full", 8, True)
    assert off < fsdp < ddp

    # At 85% of the GPU (to the byte) each one still fits; one GiB less and the next rung is taken.
    def at(per: int) -> float:
        return (math.ceil(per / 0.85) + 1) / GIB

    assert auto("full", 8, at(ddp)).strategy == "ddp"
    assert auto("full", 8, at(ddp) - 1).strategy == "fsdp"
    assert auto("full", 8, at(fsdp)).offload is False
    assert auto("full", 8, at(fsdp) - 1).offload is True
    assert auto("full", 8, at(off)).offload is True
    with pytest.raises(ForgeError) as error:
        auto("full", 8, at(off) - 1)
    assert error.value.code == ErrorCode.MEMORY_INSUFFICIENT
    assert "more GPUs" in error.value.fix


def test_full_7b_on_8x80_chooses_fsdp_with_its_figures() -> None:
    choice = auto("full", 8, 80)
    assert (choice.strategy, choice.gpus, choice.offload) == ("fsdp", 8, False)
    assert "sharded across the 8 GPUs" in choice.reason and "full copy would need" in choice.reason


def test_offload_is_bounded_by_host_ram() -> None:
    off = estimate_per_gpu(LLAMA_7B, strategy="fsdp", world_size=2, offload=True, method="full", **SHAPE)
    fits = auto("full", 2, 24, cpu_bytes=off.cpu_bytes_per_node)
    assert fits.offload and "of RAM per machine" in fits.reason
    with pytest.raises(ForgeError):
        auto("full", 2, 24, cpu_bytes=off.cpu_bytes_per_node - 1)


def test_nodes_multiply_the_world_size() -> None:
    choice = auto("full", 4, 40, nodes=2)
    assert (choice.strategy, choice.gpus, choice.nodes) == ("fsdp", 4, 2)
    assert choice.per_gpu_bytes == per_gpu("fsdp", "full", 8)


def test_qlora_never_shards_under_auto_and_says_why() -> None:
    assert auto("qlora", 2, 24).strategy == "ddp"
    with pytest.raises(ForgeError) as error:
        auto("qlora", 4, 5)
    assert "4-bit base" in error.value.message and error.value.code == ErrorCode.MEMORY_INSUFFICIENT
    with pytest.raises(ForgeError) as hint:
        auto("qlora", 8, 6)  # LoRA sharded over 8 fits where QLoRA cannot: the fix says so
    assert "method lora with distributed fsdp" in hint.value.fix


def test_explicit_strategies_are_returned_even_when_they_do_not_fit() -> None:
    ddp = choose_strategy(LLAMA_7B, requested="ddp", gpus=8, nodes=1, gpu_bytes=80 * GIB, method="full", **SHAPE)
    assert (ddp.strategy, ddp.fits) == ("ddp", False) and "may run out of memory" in ddp.reason
    zero3 = choose_strategy(LLAMA_7B, requested="deepspeed", gpus=8, nodes=1, gpu_bytes=80 * GIB, offload=True,
                            method="full", **SHAPE)  # fmt: skip
    assert (zero3.strategy, zero3.offload, zero3.fits) == ("deepspeed", True, True)
    one = choose_strategy(LLAMA_7B, requested="none", gpus=8, nodes=1, gpu_bytes=80 * GIB, method="lora", **SHAPE)
    assert (one.strategy, one.gpus) == ("none", 1)
    qlora = choose_strategy(LLAMA_7B, requested="fsdp", gpus=2, nodes=1, gpu_bytes=80 * GIB, method="qlora", **SHAPE)
    assert "does not shard QLoRA's 4-bit base" in qlora.reason
