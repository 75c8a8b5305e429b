"""Several GPUs: which of them a plan may spread training over, and the strategy for a proposal.

The strategy itself is hardware/parallel_memory.py's choice (`choose_strategy`); this module gives it
the machine (GPU count and the smallest GPU's memory, forge.yaml's training.distributed / gpus / nodes /
offload) and turns its answer into the plan's memory test. One GPU, a CPU, or distributed: none give
no setting, and the plan behaves as on one device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from forgellm.errors import ErrorCode, ForgeError
from forgellm.hardware.parallel_memory import ShardedEstimate, StrategyChoice, choose_strategy, estimate_per_gpu

if TYPE_CHECKING:
    from forgellm.config.schema import TrainingSection
    from forgellm.hardware.probe import HardwareInfo
    from forgellm.models.dims import ModelDims

# Opens the training rationale's sentence about the strategy: a choice the plan wrote (not the user's),
# so a later plan decides again (another machine may have other GPUs).
PLAN_MARK = "Distributed training ("


@dataclass(frozen=True)
class GpuSetting:
    """What the plan may use: ``gpus`` per machine of at least ``gpu_bytes`` each, on ``nodes`` machines."""

    requested: str  # auto | ddp | fsdp | deepspeed (training.distributed)
    gpus: int
    nodes: int
    gpu_bytes: int  # the smallest GPU: every rank must fit
    offload: bool
    cpu_bytes: int  # RAM available on this machine, for the offload's shards

    def choose(self, dims: ModelDims, values: dict[str, Any], precision: str) -> StrategyChoice | None:
        """The strategy for a proposal's shape (by proposal field name), or None when nothing fits."""
        try:
            return choose_strategy(
                dims, requested=self.requested, gpus=self.gpus, nodes=self.nodes, gpu_bytes=self.gpu_bytes,
                offload=self.offload, cpu_bytes=self.cpu_bytes, **_shape(values, precision),
            )  # fmt: skip
        except ForgeError as exc:
            if exc.code != ErrorCode.MEMORY_INSUFFICIENT:
                raise
            return None

    def estimate(self, dims: ModelDims, values: dict[str, Any], precision: str, choice: StrategyChoice):
        """The per-GPU breakdown of a choice (for the plan's record)."""
        world = choice.gpus * choice.nodes
        return estimate_per_gpu(dims, strategy=choice.strategy, world_size=world, offload=choice.offload,
                                gpus_per_node=choice.gpus, **_shape(values, precision))  # fmt: skip


def _shape(values: dict[str, Any], precision: str) -> dict[str, Any]:
    return {
        "method": values["method"], "seq_len": values["max_length"], "micro_batch": values["micro_batch_size"],
        "precision": precision, "lora_r": values["lora_r"], "lora_targets": values["lora_targets"],
        "gradient_checkpointing": values["gradient_checkpointing"],
    }  # fmt: skip


def plan_made(training: TrainingSection) -> bool:
    """Whether training.distributed / gpus / offload were written by a plan (its rationale says so)."""
    return PLAN_MARK in (training.rationale or "")


def gpu_setting(hardware: HardwareInfo, training: TrainingSection) -> GpuSetting | None:
    """The GPUs a plan spreads training over, or None to plan for one device (no CUDA GPU, a single GPU
    in all, or distributed: none). The user's training.distributed / gpus / offload are kept; values an
    earlier plan wrote are decided again."""
    own = not plan_made(training)
    requested = training.distributed if own else "auto"
    if not hardware.gpus or requested == "none":
        return None
    # More GPUs than this machine has is `forge train`'s error to report; the plan sizes for those it sees.
    gpus = min(training.gpus or len(hardware.gpus), len(hardware.gpus)) if own else len(hardware.gpus)
    if gpus * training.nodes == 1:
        return None
    used = sorted(hardware.gpus, key=lambda g: g.index)[:gpus]
    return GpuSetting(
        requested=requested, gpus=gpus, nodes=training.nodes, gpu_bytes=min(g.vram_total_bytes for g in used),
        offload=training.offload if own else False, cpu_bytes=hardware.ram_available_bytes,
    )  # fmt: skip


@dataclass(frozen=True)
class Distribution:
    """The plan's strategy and its per-GPU memory."""

    choice: StrategyChoice
    estimate: ShardedEstimate

    def rationale(self) -> str:
        return f"{PLAN_MARK}{self.choice.strategy}, {self.choice.gpus} GPU(s) x {self.choice.nodes} machine(s)): " \
               f"{self.choice.reason}"  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        estimate = self.estimate.to_dict()
        estimate.pop("single")  # the plan's record carries the one-device estimate already
        return {**self.choice.to_dict(), "per_gpu": estimate}
