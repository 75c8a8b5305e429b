"""Per-GPU training memory for each way of spreading training over GPUs, and the choice between them.

Every figure derives from the one-device estimate (hardware/memory.py, whose notation this follows:
``P`` parameters, ``T`` trainable parameters, ``w`` bytes of the compute precision) with ``N`` the
world size (processes = GPUs, over all machines). The single estimate's weights, gradients,
optimizer, activations and logits are split or kept as below; ``buffers`` is what a strategy adds.

none       the single estimate, one process.
ddp        (torch DistributedDataParallel) a full replica on every GPU: weights, gradients, optimizer,
           activations and logits as on one device. buffers = T * 4: DDP's reducer copies the gradients
           of the trainable parameters into flat buckets for the all-reduce; ``bucket_cap_mb`` (25 MiB)
           bounds each bucket, not their number, so together they hold every gradient once more. This
           assumes torch's default ``gradient_as_bucket_view=False`` (with True the copy disappears).
fsdp       (FSDP2, torch ``fully_shard`` per decoder layer, as accelerate applies it) weights, gradients and
           optimizer state divided by N: ZeRO stage 3 partitioning (Rajbhandari et al. 2020, "ZeRO", §5:
           P_os+g+p holds (2 + 2 + K) * Psi / N_d bytes per device). For LoRA the frozen base weights are
           sharded too (fully_shard shards every parameter of a unit, frozen or not).
           buffers = 2 * L1 * w + E_side * w. L1 is one decoder layer's parameters: each unit is all-
           gathered in the compute precision just before its forward (and again for its backward, where
           its reduce-scatter follows) and the next unit is prefetched meanwhile, so two are unsharded at
           a time. E_side (embeddings + an untied lm_head) belongs to the root unit, which FSDP2 gathers at
           the start of forward and does not reshard until backward ends. LoRA adds each layer's adapters
           (fp32). Activations and logits are unchanged: each GPU runs its own micro-batch.
           offload=True (CPUOffloadPolicy): the weight, gradient and optimizer shards live in CPU RAM and
           the optimizer steps there; the GPU keeps buffers + activations + logits + overhead, and each
           machine needs the shards of its processes in RAM: cpu_bytes_per_node = shards * gpus per node.
           The single estimate counts full fine-tuning's bf16 weights and fp32 master copy separately;
           FSDP2 with mixed precision keeps only the fp32 shard (param_dtype casts on gathering), so the
           sharded weights figure over-counts by P * w / N: a margin, not an error of sign.
deepspeed  (ZeRO-3 through accelerate) the same partitioning as fsdp, the paper's stage 3; its parameter
           prefetch gathers layer by layer like FSDP2, so the same buffers are taken. offload = optimizer
           (offload_optimizer) and parameters (offload_param) to CPU: the same bytes move.
overhead   FRAGMENTATION of what stays on the GPU, + the CUDA context (as hardware/memory.py).

QLoRA. DDP: as LoRA. FSDP2: bitsandbytes stores 4-bit weights as uint8 by default, which fully_shard
cannot shard; accelerate leaves such parameters out of sharding (``ignored_params``, accelerate PR
#3987), so every GPU keeps the whole 4-bit base and only the adapters are sharded; FSDP2 with a float
``bnb_4bit_quant_storage`` is still an open request (accelerate issue #3874). Sharding therefore saves
nothing for QLoRA and ``choose_strategy`` never picks fsdp for it (it says so, and offers LoRA, whose
base FSDP does shard). DeepSpeed ZeRO-3: PEFT documents ZeRO-3 + QLoRA with ``bnb_4bit_quant_storage``
set to the compute dtype; the 4-bit base is then partitioned like any weight (counted so here).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from forgellm.errors import ErrorCode, ForgeError
from forgellm.hardware.memory import (
    ADAPTER_BYTES,
    CPU_FRAMEWORK_BYTES,
    CUDA_CONTEXT_BYTES,
    FRAGMENTATION,
    GIB,
    GRAD_BYTES,
    NF4_BYTES_PER_PARAM,
    TIGHT_ABOVE,
    Device,
    LoraTargets,
    MemoryEstimate,
    Method,
    Precision,
    SizedModel,
    count_params,
    dims_of,
    estimate_training_memory,
)

STRATEGIES = ("none", "ddp", "fsdp", "deepspeed")
REQUESTS = ("auto", *STRATEGIES)
SHARDED = ("fsdp", "deepspeed")
# Whether the strategy partitions QLoRA's 4-bit base weights (see the module docstring).
QLORA_SHARDS_BASE = {"fsdp": False, "deepspeed": True}
# Unsharded decoder layers on a GPU at once: the one computing and the one prefetched.
GATHERED_LAYERS = 2
_NAMES = {"none": "one GPU", "ddp": "DDP", "fsdp": "FSDP", "deepspeed": "DeepSpeed ZeRO-3"}


@dataclass(frozen=True)
class ShardedEstimate:
    """Peak memory on each GPU for one strategy. With offload the shards are counted in
    ``cpu_bytes_per_node``, not in the GPU fields (which say what stays on the GPU)."""

    strategy: str  # none | ddp | fsdp | deepspeed
    world_size: int  # processes (GPUs) in all
    offload: bool
    single: MemoryEstimate  # the one-device estimate it derives from
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    logits_bytes: int
    buffers_bytes: int  # DDP gradient buckets; FSDP / ZeRO-3 gathered layers and root unit
    overhead_bytes: int
    per_gpu_bytes: int  # the total on each GPU
    cpu_bytes_per_node: int  # host RAM the offload needs on each machine (0 without offload)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "single": self.single.to_dict()}


@dataclass(frozen=True)
class StrategyChoice:
    strategy: str  # none | ddp | fsdp | deepspeed (never auto)
    gpus: int  # processes per machine
    nodes: int
    offload: bool
    per_gpu_bytes: int
    reason: str  # one sentence a user reads: why this strategy and count
    fits: bool = True  # False only for an explicit request that does not fit (the caller decides)
    cpu_bytes_per_node: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_per_gpu(
    spec_or_dims: SizedModel,
    *,
    strategy: str,
    world_size: int,
    offload: bool = False,
    method: Method,
    seq_len: int,
    micro_batch: int,
    precision: Precision,
    lora_r: int = 16,
    lora_targets: LoraTargets = "all-linear",
    gradient_checkpointing: bool = True,
    gpus_per_node: int | None = None,
    device: Device = "cuda",
) -> ShardedEstimate:
    """Per-GPU memory of ``strategy`` by the arithmetic in this module's docstring; ``gpus_per_node``
    (default: all ``world_size`` on one machine) only sizes the offload's host RAM."""
    _check(strategy, STRATEGIES, "training.distributed")
    _check_counts(world_size=world_size, gpus_per_node=gpus_per_node or world_size)
    if strategy == "none" and world_size != 1:
        raise ForgeError(
            f"distributed: none trains in one process, not {world_size}.",
            fix="Set training.distributed to ddp, fsdp or deepspeed (or auto) to use several GPUs.",
            code=ErrorCode.USAGE_INVALID,
        )
    if offload and strategy not in SHARDED:
        raise ForgeError(
            f"training.offload moves sharded states to CPU RAM; {strategy} shards nothing.",
            fix="Set training.distributed to fsdp or deepspeed, or training.offload to false.",
            code=ErrorCode.USAGE_INVALID,
        )
    single = estimate_training_memory(
        spec_or_dims, method=method, seq_len=seq_len, micro_batch=micro_batch, precision=precision,
        lora_r=lora_r, lora_targets=lora_targets, gradient_checkpointing=gradient_checkpointing, device=device,
    )  # fmt: skip
    weights, grads, optim = single.weights_bytes, single.gradients_bytes, single.optimizer_bytes
    buffers, kept = 0, 0  # kept: weights no strategy shards (QLoRA's 4-bit base under FSDP2)
    if strategy == "ddp":
        buffers = single.trainable_params * GRAD_BYTES
    elif strategy in SHARDED:
        if method == "qlora" and not QLORA_SHARDS_BASE[strategy]:
            kept = weights - single.trainable_params * ADAPTER_BYTES
        weights = kept + _shard(weights - kept, world_size)
        grads, optim = _shard(grads, world_size), _shard(optim, world_size)
        buffers = _gathered_bytes(spec_or_dims, single, sharded_base=kept == 0)
    cpu = 0
    if offload:
        cpu = (weights - kept + grads + optim) * (gpus_per_node or world_size)
        weights, grads, optim = kept, 0, 0
    on_gpu = weights + grads + optim + single.activations_bytes + single.logits_bytes + buffers
    context = CUDA_CONTEXT_BYTES if device == "cuda" else CPU_FRAMEWORK_BYTES
    overhead = round(on_gpu * FRAGMENTATION) + context
    return ShardedEstimate(
        strategy=strategy, world_size=world_size, offload=offload, single=single, weights_bytes=weights,
        gradients_bytes=grads, optimizer_bytes=optim, activations_bytes=single.activations_bytes,
        logits_bytes=single.logits_bytes, buffers_bytes=buffers, overhead_bytes=overhead,
        per_gpu_bytes=on_gpu + overhead, cpu_bytes_per_node=cpu,
    )  # fmt: skip


def _shard(total: int, world_size: int) -> int:
    return -(-total // world_size)  # each rank holds the ceiling (the flat shard is padded)


def _gathered_bytes(spec_or_dims: SizedModel, single: MemoryEstimate, *, sharded_base: bool) -> int:
    """GATHERED_LAYERS decoder layers unsharded in the compute precision, + the root unit (embeddings,
    untied lm_head); LoRA adds the layers' fp32 adapters. Without a sharded base only adapters gather."""
    dims = dims_of(spec_or_dims)
    total, embedding_side = count_params(dims)
    w = 4 if single.precision == "fp32" else 2
    adapters = 0 if single.method == "full" else single.trainable_params // dims.n_layers * ADAPTER_BYTES
    if not sharded_base:
        return GATHERED_LAYERS * adapters
    layer = (total - embedding_side) // dims.n_layers
    layer_bytes = layer * NF4_BYTES_PER_PARAM if single.method == "qlora" else layer * w
    return round(GATHERED_LAYERS * (layer_bytes + adapters) + embedding_side * w)


def choose_strategy(
    spec_or_dims: SizedModel,
    *,
    requested: str,
    gpus: int,
    nodes: int,
    gpu_bytes: int,
    offload: bool = False,
    method: Method,
    seq_len: int,
    micro_batch: int,
    precision: Precision,
    lora_r: int = 16,
    lora_targets: LoraTargets = "all-linear",
    gradient_checkpointing: bool = True,
    cpu_bytes: int | None = None,
) -> StrategyChoice:
    """The strategy for ``gpus`` GPUs of ``gpu_bytes`` on each of ``nodes`` machines (module docstring).

    ``requested`` auto: one GPU in all -> none; DDP when it fits one GPU (within TIGHT_ABOVE); else FSDP;
    else FSDP + offload (within ``cpu_bytes`` of host RAM per machine, when given); else a ForgeError
    (MEMORY_INSUFFICIENT) with the fix. ``offload=True`` with auto asks for FSDP + offload directly.
    An explicit strategy is returned with its estimate even when it does not fit (``fits`` False, and
    the reason says so): the caller decides.
    """
    _check(requested, REQUESTS, "training.distributed")
    _check_counts(gpus=gpus, nodes=nodes)
    shape = dict(method=method, seq_len=seq_len, micro_batch=micro_batch, precision=precision, lora_r=lora_r,
                 lora_targets=lora_targets, gradient_checkpointing=gradient_checkpointing)  # fmt: skip
    limit = TIGHT_ABOVE * gpu_bytes
    world = gpus * nodes

    def estimate(strategy: str, with_offload: bool = False) -> ShardedEstimate:
        size = 1 if strategy == "none" else world
        return estimate_per_gpu(spec_or_dims, strategy=strategy, world_size=size, offload=with_offload,
                                gpus_per_node=1 if strategy == "none" else gpus, **shape)  # fmt: skip

    def fits(found: ShardedEstimate) -> bool:
        host_ok = cpu_bytes is None or found.cpu_bytes_per_node <= cpu_bytes
        return found.per_gpu_bytes <= limit and host_ok

    def choice(found: ShardedEstimate, why: str) -> StrategyChoice:
        one = found.strategy == "none"
        return StrategyChoice(found.strategy, 1 if one else gpus, 1 if one else nodes, found.offload,
                              found.per_gpu_bytes, why, fits(found), found.cpu_bytes_per_node)  # fmt: skip

    if requested != "auto":
        found = estimate(requested, offload and requested in SHARDED)
        return choice(found, _explicit_reason(found, gpu_bytes, fits(found), method, world))
    if world == 1:
        found = estimate("none")
        return choice(found, f"One GPU: no distribution; training {_need(found, gpu_bytes)}.")
    if offload:
        found = estimate("fsdp", True)
        return choice(found, f"You set training.offload: FSDP with CPU offload {_per_gpu(found, gpu_bytes, world)}"
                             f"{_host(found)}.")  # fmt: skip
    ddp = estimate("ddp")
    if fits(ddp):
        return choice(ddp, f"DDP {_per_gpu(ddp, gpu_bytes, world)}: the model and optimizer fit one GPU, so "
                           "each GPU keeps a full copy and trains its own examples (fastest).")  # fmt: skip
    if method == "qlora":
        raise _qlora_does_not_fit(spec_or_dims, ddp, gpu_bytes, world, shape)
    fsdp = estimate("fsdp")
    if fits(fsdp):
        return choice(fsdp, f"FSDP {_per_gpu(fsdp, gpu_bytes, world)}: a full copy would need "
                            f"~{_gib(ddp.per_gpu_bytes)} per GPU, so weights, gradients and optimizer state are "
                            f"sharded across the {world} GPUs.")  # fmt: skip
    offloaded = estimate("fsdp", True)
    if fits(offloaded):
        return choice(offloaded, f"FSDP with CPU offload {_per_gpu(offloaded, gpu_bytes, world)}"
                                 f"{_host(offloaded)}: sharded across {world} GPUs it still needs "
                                 f"~{_gib(fsdp.per_gpu_bytes)} per GPU, so the shards live in CPU RAM "
                                 "(slower).")  # fmt: skip
    raise _does_not_fit(fsdp, offloaded, gpu_bytes, world, cpu_bytes)


def _explicit_reason(found: ShardedEstimate, gpu_bytes: int, fits: bool, method: str, world: int) -> str:
    name = _NAMES[found.strategy] + (" with CPU offload" if found.offload else "")
    figures = _need(found, gpu_bytes) if found.strategy == "none" else _per_gpu(found, gpu_bytes, world)
    why = f"You set training.distributed: {found.strategy}; {name} {figures}{_host(found)}"
    if method == "qlora" and found.strategy == "fsdp":
        why += "; FSDP2 does not shard QLoRA's 4-bit base weights (each GPU keeps them whole)"
    if method == "qlora" and found.strategy in SHARDED:  # training/launch.py's _check_engine
        why += "; Forge trains QLoRA with DDP only, so `forge train` refuses this (use ddp, or LoRA)"
    if fits:
        return why + "."
    if found.per_gpu_bytes > TIGHT_ABOVE * gpu_bytes:
        return why + f"; that is over {TIGHT_ABOVE:.0%} of one GPU: it may run out of memory."
    return why + "; that is more RAM than the machine has: it may run out of memory."


def _qlora_does_not_fit(
    spec_or_dims: SizedModel, ddp: ShardedEstimate, gpu_bytes: int, world: int, shape: dict[str, Any]
) -> ForgeError:
    lora = estimate_per_gpu(spec_or_dims, strategy="fsdp", world_size=world, **{**shape, "method": "lora"})
    lora_hint = (
        f"use method lora with distributed fsdp (FSDP shards its bf16 base: ~{_gib(lora.per_gpu_bytes)} per GPU), "
        if lora.per_gpu_bytes <= TIGHT_ABOVE * gpu_bytes else ""
    )  # fmt: skip
    return ForgeError(
        f"QLoRA needs ~{_gib(ddp.per_gpu_bytes)} per GPU of {_gib(gpu_bytes)}, and sharding cannot lower it: "
        "FSDP2 does not shard its 4-bit base weights (accelerate keeps them whole on every GPU).",
        fix=f"Choose a shorter max_length or micro-batch 1, {lora_hint}or a smaller model (see `forge models`).",
        code=ErrorCode.MEMORY_INSUFFICIENT,
        data={"per_gpu_bytes": ddp.per_gpu_bytes, "gpu_bytes": gpu_bytes, "world_size": world},
    )


def _does_not_fit(
    fsdp: ShardedEstimate, offloaded: ShardedEstimate, gpu_bytes: int, world: int, cpu_bytes: int | None
) -> ForgeError:
    host = f" and ~{_gib(offloaded.cpu_bytes_per_node)} of RAM per machine" if cpu_bytes is not None else ""
    return ForgeError(
        f"Training does not fit even sharded over {world} GPUs: FSDP needs ~{_gib(fsdp.per_gpu_bytes)} per GPU "
        f"of {_gib(gpu_bytes)}; with CPU offload ~{_gib(offloaded.per_gpu_bytes)} per GPU{host}.",
        fix="Use more GPUs (training.gpus / training.nodes), QLoRA or LoRA instead of full fine-tuning, a shorter "
        "max_length, or a smaller model.",
        code=ErrorCode.MEMORY_INSUFFICIENT,
        data={"per_gpu_bytes": offloaded.per_gpu_bytes, "gpu_bytes": gpu_bytes, "world_size": world},
    )


def _check(value: str, allowed: tuple[str, ...], key: str) -> None:
    if value not in allowed:
        raise ForgeError(
            f"Unknown {key} {value!r}.", fix=f"Use one of: {', '.join(allowed)}.", code=ErrorCode.USAGE_INVALID
        )


def _check_counts(**counts: int) -> None:
    for name, number in counts.items():
        if not isinstance(number, int) or number < 1:
            raise ForgeError(
                f"{name} must be a whole number of at least 1, got {number!r}.", code=ErrorCode.USAGE_INVALID
            )


def _need(found: ShardedEstimate, gpu_bytes: int) -> str:
    return f"needs ~{_gib(found.per_gpu_bytes)} of {_gib(gpu_bytes)}"


def _per_gpu(found: ShardedEstimate, gpu_bytes: int, world: int) -> str:
    return f"needs ~{_gib(found.per_gpu_bytes)} per GPU of {_gib(gpu_bytes)} on {world} GPUs"


def _host(found: ShardedEstimate) -> str:
    return f" and ~{_gib(found.cpu_bytes_per_node)} of RAM per machine" if found.offload else ""


def _gib(n: float) -> str:
    return f"{n // GIB} GiB" if n % GIB == 0 else f"{n / GIB:.1f} GiB"
