"""Cloud GPUs: the ones Forge can size a task for, `--gpu TYPE:N`, and the count a training needs.

Names are spelled as SkyPilot spells accelerators (its catalogs: `sky show-gpus`), so they go into the
task unchanged. Memory is what nvidia-smi reports for one card (MiB), not the marketing figure: the
memory estimate is compared with what the framework can allocate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from forgellm.errors import ErrorCode, ForgeError

MIB = 1024**2

# SkyPilot's accelerator name -> (memory of one card in MiB as nvidia-smi reports it, what a person calls it).
CLOUD_GPUS: dict[str, tuple[int, str]] = {
    "H100": (81_559, "NVIDIA H100 80GB"),
    "H200": (143_771, "NVIDIA H200 141GB"),
    "A100-80GB": (81_920, "NVIDIA A100 80GB"),
    "A100": (40_960, "NVIDIA A100 40GB"),
    "L40S": (46_068, "NVIDIA L40S 48GB"),
    "A10G": (23_028, "NVIDIA A10G 24GB"),
    "L4": (23_034, "NVIDIA L4 24GB"),
    "RTX4090": (24_564, "NVIDIA RTX 4090 24GB"),
}
# Tried in this order when no --gpu is given: the common training GPU first, then the larger one.
DEFAULT_GPUS = ("H100", "H200")
COUNTS = (1, 2, 4, 8)  # GPUs on one cloud machine: what the clouds' instance types offer
_SPEC = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?::\s*(\d+))?\s*$")


@dataclass(frozen=True)
class GpuRequest:
    """What `--gpu` asked for: a type and, when given, a count per machine."""

    name: str
    count: int | None


def gpu_memory_bytes(name: str) -> int:
    return CLOUD_GPUS[name][0] * MIB


def known_gpus() -> str:
    return ", ".join(f"{name} ({label})" for name, (_, label) in CLOUD_GPUS.items())


def canonical_gpu(name: str) -> str:
    """The table's spelling of a GPU name given in any case (h100 -> H100), or a usage error listing the table."""
    for known in CLOUD_GPUS:
        if known.lower() == name.lower():
            return known
    raise ForgeError(
        f"Forge does not know the GPU '{name}'.",
        fix=f"Use one of: {known_gpus()}; e.g. --gpu H100:2.",
        code=ErrorCode.USAGE_INVALID,
        data={"gpu": name, "known": list(CLOUD_GPUS)},
    )


def parse_gpu(spec: str) -> GpuRequest:
    """`H100`, `H100:2`, `a100-80gb:4` -> GpuRequest; anything else is a usage error that shows the form."""
    match = _SPEC.match(spec)
    count = int(match.group(2)) if match and match.group(2) else None
    if match is None or (count is not None and count not in COUNTS):
        raise ForgeError(
            f"--gpu '{spec}' is not of the form TYPE or TYPE:COUNT with COUNT one of {', '.join(map(str, COUNTS))}.",
            fix="Write e.g. --gpu H100 (Forge picks the count) or --gpu H100:2.",
            code=ErrorCode.USAGE_INVALID,
            data={"gpu": spec},
        )
    return GpuRequest(canonical_gpu(match.group(1)), count)


@dataclass(frozen=True)
class Sizing:
    """The accelerators of a task, and why: the strategy and per-GPU memory Forge's estimate gives them."""

    gpu: str
    count: int  # per machine
    nodes: int
    strategy: str
    per_gpu_bytes: int
    gpu_bytes: int
    reason: str
    chosen_by: str  # "--gpu" or "estimate"

    @property
    def accelerators(self) -> str:
        return f"{self.gpu}:{self.count}"

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "accelerators": self.accelerators}


def _candidates(request: GpuRequest | None, offered: Mapping[str, tuple[int, ...]] | None) -> list[tuple[str, int]]:
    """(type, count) to try in order: what --gpu fixes, else the defaults; counts the provider's catalog offers
    on one machine when it is known (AWS has H100 only by 8)."""
    fixed = request.count if request else None
    gpus = (request.name,) if request else DEFAULT_GPUS
    if offered is not None and not request:
        gpus = tuple(g for g in gpus if g in offered) or gpus
    tried = []
    for gpu in gpus:
        if fixed:
            counts: tuple[int, ...] = (fixed,)
        elif offered is not None and gpu in offered:
            counts = tuple(c for c in COUNTS if c in offered[gpu]) or COUNTS
        else:
            counts = COUNTS
        tried += [(gpu, count) for count in counts]
    return tried


def size_accelerators(
    dims: Any, training: Any, *, seq_len: int, request: GpuRequest | None, nodes: int,
    offered: Mapping[str, tuple[int, ...]] | None = None,
) -> Sizing:  # fmt: skip
    """The GPU type and count for a training: `--gpu TYPE:N` when it fits; `--gpu TYPE` or nothing: the smallest
    count (among those `offered`, the provider's catalog, when known) whose strategy
    (hardware.parallel_memory.choose_strategy) fits that GPU's memory."""
    from forgellm.hardware.parallel_memory import choose_strategy

    precision = "bf16" if training.precision == "auto" else training.precision  # every GPU above has bf16
    settings = dict(
        method=training.method, seq_len=seq_len, micro_batch=training.micro_batch_size, precision=precision,
        lora_r=training.lora.r, gradient_checkpointing=training.gradient_checkpointing,
        lora_targets=training.lora.target_modules if isinstance(training.lora.target_modules, str) else "all-linear",
    )  # fmt: skip
    candidates = _candidates(request, offered)
    # More GPUs before CPU offload: a cloud GPU costs less than the hours offload adds (unless forge.yaml asks).
    passes = (True,) if training.offload else (False, True)
    last_error: ForgeError | None = None
    for allow_offload in passes:
        for gpu, count in candidates:
            try:
                choice = choose_strategy(
                    dims, requested=training.distributed, gpus=count, nodes=nodes, gpu_bytes=gpu_memory_bytes(gpu),
                    offload=training.offload, **settings,
                )  # fmt: skip
            except ForgeError as exc:  # does not fit even sharded at this count: try the next
                last_error = exc
                continue
            # An explicit count that would run out of memory is refused, not rented.
            if choice.per_gpu_bytes <= gpu_memory_bytes(gpu) and (allow_offload or not choice.offload):
                return Sizing(
                    gpu=gpu, count=count, nodes=nodes, per_gpu_bytes=choice.per_gpu_bytes,
                    strategy=choice.strategy + (" + offload" if choice.offload else ""),
                    gpu_bytes=gpu_memory_bytes(gpu), reason=choice.reason,
                    chosen_by="--gpu" if request and request.count else "estimate",
                )  # fmt: skip
    largest = {gpu: count for gpu, count in candidates}  # the last count tried of each type
    where = " or ".join(f"{count} x {gpu}" for gpu, count in largest.items())
    bigger = "a larger count or GPU (--gpu H100:8), " if request else ""
    raise ForgeError(
        f"This training does not fit {where} on {nodes} machine(s), even sharded.",
        fix=f"Use {bigger}a smaller model, method lora or qlora, a shorter model.max_length, "
        "or more machines (--nodes).",
        code=ErrorCode.MEMORY_INSUFFICIENT,
        data={"gpus": list(largest), "nodes": nodes, "cause": last_error.message if last_error else None},
    )
