"""The one decision of training precision (bf16, fp16 or fp32), with its reason.

Everything that needs the precision asks here: the plan (which writes it to forge.yaml with the
reason), the learning-rate rule, the memory estimator, the trainer (``auto`` and forced values),
evaluation and `forge hardware`. No torch at import: the plan and `forge hardware` stay light.

- NVIDIA GPU: bf16 where every visible GPU has it (Ampere+), else fp16. Tensor cores make the
  reduced precision several times faster; nothing to measure.
- CPU: measured. Native bf16 instructions (AVX512-BF16, AMX) make bf16 autocast faster on some
  CPUs and slower on others (oneDNN kernels, shapes, memory bandwidth), so `forge plan` times a few
  real training steps of the model in fp32 and in bf16 on this machine (training/calibrate.py) and
  keeps the faster one whose loss agrees with fp32's. The result is cached per machine and model in
  FORGE_HOME/calibration.json. Without a measurement the CPU trains in fp32: exact, and never slow
  by emulation.
- Apple MPS: fp32 (bf16 needs macOS 14+ and is not faster for small models there).
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from forgellm.errors import ErrorCode, ForgeError

if TYPE_CHECKING:
    from forgellm.hardware.probe import HardwareInfo

Precision = Literal["bf16", "fp16", "fp32"]
CALIBRATION_FILE = "calibration.json"
CALIBRATION_VERSION = 1
# bf16 must beat fp32 by this much to be chosen: a tie goes to the exact precision.
BF16_MIN_SPEEDUP = 1.05
# bf16's loss on the same batch may differ from fp32's by this share; more means it is not stable here.
BF16_MAX_LOSS_GAP = 0.02


@dataclass(frozen=True)
class Measurement:
    """A few timed training steps of one model at one precision on this machine."""

    precision: Precision
    tokens_per_second: float  # real (non-padding) tokens per second of a whole optimizer step
    seconds_per_step: float
    loss: float | None  # the loss of the same batch, for the stability check (None = not finite)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PrecisionDecision:
    precision: Precision
    reason: str
    source: Literal["rule", "measured", "user"]
    measurements: tuple[Measurement, ...] = field(default_factory=tuple)
    shape: str | None = None  # what was measured, e.g. "LoRA r4, 4 x 320 tokens"

    @property
    def tokens_per_second(self) -> float | None:
        """Measured training throughput at the chosen precision, when there is one."""
        return next((m.tokens_per_second for m in self.measurements if m.precision == self.precision), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "reason": self.reason,
            "source": self.source,
            "measurements": [m.to_dict() for m in self.measurements],
            "shape": self.shape,
            "tokens_per_second": self.tokens_per_second,
        }


# ------------------------------------------------------------------------------------------ the rules


def rule_precision(hardware: HardwareInfo) -> PrecisionDecision:
    """The precision without a measurement (see the module docstring)."""
    if hardware.gpus:
        if hardware.bf16.gpu:
            return PrecisionDecision("bf16", "bf16: the GPU has bf16 tensor cores (Ampere or newer).", "rule")
        return PrecisionDecision("fp16", "fp16: this GPU has no bf16 (older than Ampere); fp16 with loss "
                                 "scaling uses its tensor cores.", "rule")  # fmt: skip
    if hardware.mps:
        return PrecisionDecision("fp32", "fp32: on Apple MPS reduced precision is not faster for small models.", "rule")
    return PrecisionDecision(
        "fp32",
        "fp32: on a CPU the faster precision is measured by `forge plan`; until then fp32, which is exact and "
        "never slowed down by bf16 emulation.",
        "rule",
    )


def check_requested(requested: str, hardware: HardwareInfo) -> None:
    """A forced precision this machine cannot train in: a clear error with the fix."""
    if requested in ("auto", "fp32"):
        return
    if requested == "fp16" and not hardware.gpus:
        raise ForgeError(
            "training.precision is fp16, but this machine has no NVIDIA GPU: fp16 training needs CUDA.",
            fix="Set training.precision to auto (Forge measures fp32 against bf16 on this CPU) or fp32.",
            code=ErrorCode.HARDWARE_UNSUPPORTED,
        )
    if requested == "bf16" and hardware.gpus and not hardware.bf16.gpu:
        raise ForgeError(
            f"training.precision is bf16, but this GPU ({hardware.gpus[0].name}) has no bf16 "
            "(it needs Ampere or newer).",
            fix="Set training.precision to auto (fp16 on this GPU).",
            code=ErrorCode.HARDWARE_UNSUPPORTED,
        )
    if requested == "bf16" and not hardware.gpus and hardware.bf16.cpu != "native":
        raise ForgeError(
            "training.precision is bf16, but this CPU has no bf16 instructions (AVX512-BF16 or AMX): PyTorch would "
            "emulate it, several times slower than fp32.",
            fix="Set training.precision to auto or fp32.",
            code=ErrorCode.HARDWARE_UNSUPPORTED,
        )


def decide_precision(
    hardware: HardwareInfo, requested: str = "auto", *, model_key: str | None = None
) -> PrecisionDecision:
    """The precision to train ``model_key`` in: the user's forced value (checked), the measured one when
    this machine has a calibration for the model, else the rule."""
    check_requested(requested, hardware)
    if requested != "auto":
        return PrecisionDecision(requested, f"{requested}: set in forge.yaml (training.precision).", "user")  # type: ignore[arg-type]
    if not hardware.gpus and not hardware.mps and model_key:
        cached = cached_decision(hardware, model_key)
        if cached is not None:
            return cached
    return rule_precision(hardware)


def choose_measured(measurements: list[Measurement], shape: str) -> PrecisionDecision:
    """The faster of fp32 and bf16, bf16 only when its loss agrees with fp32's on the same batch."""
    by = {m.precision: m for m in measurements}
    fp32, bf16 = by.get("fp32"), by.get("bf16")
    figures = ", ".join(f"{m.precision} {m.tokens_per_second:,.0f}" for m in measurements)
    measured = f"measured on this machine ({shape}): {figures} real tokens/s"
    if fp32 is None or fp32.loss is None:
        raise ForgeError(
            f"Training {shape} in fp32 gave no finite loss on this machine.",
            fix="Check the model's weights (`forge template check`, or another --model).",
            code=ErrorCode.PRECISION_PROBE_FAILED,
        )
    if bf16 is None:
        return PrecisionDecision("fp32", f"fp32: {measured}.", "measured", tuple(measurements), shape)
    if bf16.loss is None or abs(bf16.loss - fp32.loss) > BF16_MAX_LOSS_GAP * abs(fp32.loss):
        why = f"fp32: bf16 was not stable here (loss {bf16.loss} vs fp32 {fp32.loss:.4f}, same batch); {measured}."
        return PrecisionDecision("fp32", why, "measured", tuple(measurements), shape)
    speedup = bf16.tokens_per_second / fp32.tokens_per_second
    if speedup >= BF16_MIN_SPEEDUP:
        why = f"bf16 (autocast, fp32 adapters): {speedup:.2f}x the speed of fp32, {measured}."
        return PrecisionDecision("bf16", why, "measured", tuple(measurements), shape)
    return PrecisionDecision("fp32", f"fp32: bf16 is not faster here ({speedup:.2f}x); {measured}.",
                             "measured", tuple(measurements), shape)  # fmt: skip


def inference_precision(hardware: HardwareInfo) -> Precision:
    """What evaluation and chat load a model in: the GPU's training precision; fp32 on CPU and MPS, so
    figures compared across runs never depend on how a run was trained."""
    return rule_precision(hardware).precision if hardware.gpus else "fp32"


# ------------------------------------------------------------------------------------------ the cache


def machine_key(hardware: HardwareInfo) -> str:
    """This machine, as far as speed goes: CPU model, cores, bf16 flags and the torch that ran."""
    cpu = _cpu_model() or platform.processor() or hardware.machine
    parts = [cpu, hardware.cpu_physical_cores, hardware.cpu_logical_cores, list(hardware.bf16.cpu_flags), _torch()]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), None)


def _torch() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def _cache_path() -> Path:
    from forgellm.config.settings import forge_home

    return forge_home() / CALIBRATION_FILE


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CALIBRATION_VERSION:
        return {}
    return data


def cached_decision(hardware: HardwareInfo, model_key: str, shape: str | None = None) -> PrecisionDecision | None:
    """The measured decision for the model on this machine (for ``shape``, or the newest of any shape)."""
    entries = _read_cache().get("entries", {}).get(machine_key(hardware), {}).get(model_key, {})
    entry = entries.get(shape) if shape else max(entries.values(), key=lambda e: e.get("at", 0), default=None)
    if not isinstance(entry, dict):
        return None
    try:
        measurements = [Measurement(**m) for m in entry["measurements"]]
        return choose_measured(measurements, entry["shape"])
    except (KeyError, TypeError, ForgeError):
        return None


def store_decision(hardware: HardwareInfo, model_key: str, decision: PrecisionDecision) -> None:
    """Remember a measurement (atomically; a damaged cache is replaced, never fatal)."""
    import time

    from forgellm.files import atomic_write_text

    data = _read_cache() or {"version": CALIBRATION_VERSION, "entries": {}}
    models = data["entries"].setdefault(machine_key(hardware), {})
    models.setdefault(model_key, {})[decision.shape or ""] = {
        "shape": decision.shape,
        "measurements": [m.to_dict() for m in decision.measurements],
        "at": time.time(),
    }
    path = _cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
