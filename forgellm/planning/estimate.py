"""How long training takes: tokens to process / tokens per second, from a FLOPs model of the step.

Work per trained token (Kaplan et al. 2020, "Scaling Laws", §2.1): a forward pass costs ~2 FLOPs per
parameter, the backward ~4 (gradients of activations and of weights). LoRA computes no gradients of
the frozen weights, so ~4 * params; full fine-tuning ~6 * params. Gradient checkpointing recomputes
the forward during the backward: + 2 * params. Attention's s^2 term is ignored (short sequences).

Speed of the device:
- NVIDIA GPU: peak dense bf16/fp16 tensor TFLOPS of the card (by name, else by architecture family)
  times a model FLOPs utilisation of 0.3, typical of fine-tuning small batches with PyTorch.
  QLoRA also dequantises every frozen weight on every use: ~30% slower than LoRA.
- CPU: measured. `forge plan` times real training steps of the chosen model at the planned shape and
  precision on this machine (planning/calibration.py) and uses those tokens/s. Without a measurement
  (a dry run, a model not on disk yet): a figure from one measurement (NOTES.md: SmolLM2-135M, LoRA
  r=8, fp32, 2 cores, ~320 tokens/s = ~86 GFLOP/s per physical core) scaled by cores, which is
  optimistic beyond ~8 cores (memory bandwidth).
- Apple MPS: ~5 TFLOPS (fp32, M1 Pro/M2 class) x 0.3; a rough figure.

Evaluation (forward only, ~2 * params per token) over the validation split is added per evaluation,
and a fixed start-up (worker process, imports, model and data loading, final summary) per run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from forgellm.hardware.probe import HardwareInfo

MFU = 0.3
CPU_CALIBRATION_TOKENS_PER_S = 320.0
CPU_CALIBRATION_PARAMS = 134_515_008
CPU_CALIBRATION_CORES = 2
CPU_FLOPS_PER_CORE = 4 * CPU_CALIBRATION_PARAMS * CPU_CALIBRATION_TOKENS_PER_S / CPU_CALIBRATION_CORES
MPS_FLOPS = 5e12
QLORA_SLOWDOWN = 1.3
# Seconds a run spends outside its steps and evaluations: starting the worker, importing torch,
# loading the model and data, checkpoints, the summary and loss plot (measured on 2 CPU cores with
# SmolLM2-135M: ~15 s; GPUs load bigger models, which takes as long).
STARTUP_SECONDS = 20.0
# Peak dense tensor TFLOPS (bf16, fp16 before Ampere) from NVIDIA's data sheets; first match wins.
GPU_TFLOPS_BY_NAME = (
    ("B200", 2250.0), ("H200", 989.0), ("H100", 989.0), ("GH200", 989.0), ("A100", 312.0), ("A800", 312.0),
    ("L40", 181.0), ("6000 Ada", 182.0), ("4090", 165.0), ("4080", 97.0), ("4070", 58.0), ("4060", 30.0),
    ("L4", 121.0), ("A6000", 155.0), ("A10", 125.0), ("3090", 71.0), ("3080", 59.0), ("3070", 40.0),
    ("3060", 25.0), ("T4", 65.0), ("V100", 125.0), ("2080", 40.0),
)  # fmt: skip
GPU_TFLOPS_BY_ARCH = {
    "blackwell": 400.0, "hopper": 989.0, "ada": 100.0, "ampere": 70.0, "turing": 40.0, "volta": 110.0, "older": 10.0,
}  # fmt: skip


@dataclass(frozen=True)
class Throughput:
    tokens_per_second: float
    basis: str  # how the figure was obtained, for the rationale

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TimeEstimate:
    tokens_per_epoch: int
    tokens_per_step: int
    steps_per_epoch: int
    total_steps: int
    tokens_per_second: float
    seconds_per_epoch: float
    seconds_per_eval: float
    evaluations: int
    seconds_total: float  # training plus evaluations
    basis: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def flops_per_token(params: int, method: str, gradient_checkpointing: bool) -> float:
    per_param = 6.0 if method == "full" else 4.0
    return (per_param + (2.0 if gradient_checkpointing else 0.0)) * params


def device_flops(hardware: HardwareInfo) -> tuple[float, str]:
    """Sustained FLOP/s this machine gives training, and where the figure comes from."""
    gpu = hardware.largest_gpu
    if gpu is not None:
        peak = next((t for name, t in GPU_TFLOPS_BY_NAME if name.lower() in gpu.name.lower()), None)
        source = f"{gpu.name}: {peak:g} TFLOPS peak" if peak else f"{gpu.arch} GPU: ~{GPU_TFLOPS_BY_ARCH[gpu.arch]:g}"
        peak = peak or GPU_TFLOPS_BY_ARCH.get(gpu.arch, 10.0)
        return peak * 1e12 * MFU, f"{source} x {MFU:g} utilisation"
    if hardware.mps:
        return MPS_FLOPS * MFU, f"Apple GPU: ~{MPS_FLOPS / 1e12:g} TFLOPS x {MFU:g} (rough)"
    cores = hardware.cpu_physical_cores
    return CPU_FLOPS_PER_CORE * cores, (
        f"{cores} CPU cores x {CPU_FLOPS_PER_CORE / 1e9:.0f} GFLOP/s (calibrated: SmolLM2-135M LoRA, 2 cores, "
        f"{CPU_CALIBRATION_TOKENS_PER_S:g} tokens/s)"
    )


def training_throughput(
    params: int, method: str, hardware: HardwareInfo, *, gradient_checkpointing: bool,
    measured: tuple[float, str] | None = None,
) -> Throughput:
    """Tokens/s of training: ``measured`` (tokens/s, what was measured) when there is a measurement."""
    if measured is not None:
        return Throughput(measured[0], f"measured on this machine: {measured[1]}")
    flops, basis = device_flops(hardware)
    rate = flops / flops_per_token(params, method, gradient_checkpointing)
    if method == "qlora":
        rate /= QLORA_SLOWDOWN
    work = "6" if method == "full" else "4"
    extra = " + 2 (checkpointing)" if gradient_checkpointing else ""
    return Throughput(rate, f"{basis}; {work}{extra} x {params / 1e6:,.0f}M FLOPs per token")


def estimate_time(
    *,
    params: int,
    method: str,
    hardware: HardwareInfo,
    gradient_checkpointing: bool,
    train_rows: int,
    val_rows: int,
    mean_tokens: float,
    max_length: int,
    effective_batch: int,
    packing: bool,
    epochs: float,
    max_steps: int | None,
    evaluations: int,
    measured: tuple[float, str] | None = None,
) -> TimeEstimate:
    """Steps and seconds for the plan; packed sequences are full, unpacked ones hold one example."""
    speed = training_throughput(params, method, hardware, gradient_checkpointing=gradient_checkpointing,
                                measured=measured)  # fmt: skip
    tokens_per_epoch = int(train_rows * mean_tokens)
    per_sequence = max_length if packing else min(mean_tokens, max_length)
    tokens_per_step = max(1, int(effective_batch * per_sequence))
    steps_per_epoch = max(1, math.ceil(tokens_per_epoch / tokens_per_step))
    total_steps = max_steps if max_steps is not None else max(1, math.ceil(steps_per_epoch * epochs))
    # Forward only (2 FLOPs/param/token): three times the LoRA rate, less with checkpointing or full.
    eval_rate = speed.tokens_per_second * flops_per_token(params, method, gradient_checkpointing) / (2.0 * params)
    seconds_per_eval = val_rows * mean_tokens / eval_rate
    seconds_training = total_steps * tokens_per_step / speed.tokens_per_second
    return TimeEstimate(
        tokens_per_epoch=tokens_per_epoch,
        tokens_per_step=tokens_per_step,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        tokens_per_second=round(speed.tokens_per_second, 1),
        seconds_per_epoch=round(steps_per_epoch * tokens_per_step / speed.tokens_per_second, 1),
        seconds_per_eval=round(seconds_per_eval, 1),
        evaluations=evaluations,
        seconds_total=round(STARTUP_SECONDS + seconds_training + evaluations * seconds_per_eval, 1),
        basis=speed.basis,
    )


def seconds_per_step(estimate: TimeEstimate) -> float:
    return estimate.tokens_per_step / estimate.tokens_per_second


def steps_within(budget_seconds: float, estimate: TimeEstimate) -> int:
    """The most optimizer steps that, with start-up and the planned evaluations, fit in ``budget_seconds``
    (0 when not even one does)."""
    left = budget_seconds - STARTUP_SECONDS - estimate.evaluations * estimate.seconds_per_eval
    return max(0, int(left / seconds_per_step(estimate)))


def human_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    hours, rest = divmod(round(minutes), 60)
    return f"{hours} h {rest:02d} min"
