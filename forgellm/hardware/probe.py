"""What this machine can train with: CPU, RAM, disk, NVIDIA GPUs (via NVML), Apple MPS, bf16.

No torch: the probe runs in `forge status` and `forge plan --dry-run`, which must stay fast and work
before the heavy dependencies are importable. NVIDIA GPUs are read through nvidia-ml-py (`pynvml`);
the NVML module is a parameter so tests can pass a fake one, and any NVML failure (no driver, no
library) yields no GPUs plus a note instead of an exception.
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import psutil

# x86 (Intel Cooper Lake+/Sapphire Rapids, AMD Zen 4+) and Arm (ARMv8.6 "bf16") flags that give
# native bf16 matmuls on the CPU; without them PyTorch still runs bf16 but by emulation (slow).
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
# A file in /proc/cpuinfo's format read instead of the real one: plan as for another CPU (drills), and the
# test suite's fixed CPU, so no result depends on the features of the machine the tests run on.
CPUINFO_ENV = "FORGE_CPUINFO"


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    vram_total_bytes: int
    vram_free_bytes: int
    compute_capability: str  # "8.9"
    arch: str  # arch_family() of the compute capability

    @property
    def bf16(self) -> bool:
        # bf16 tensor cores arrived with Ampere (sm_80).
        return int(self.compute_capability.split(".")[0]) >= 8

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bf16": self.bf16}


@dataclass(frozen=True)
class Bf16Support:
    """Where bf16 runs natively. ``cpu`` is "native", "emulated" (works, slow) or "unknown"."""

    gpu: bool  # every visible CUDA GPU has native bf16 (False when there is no GPU)
    cpu: Literal["native", "emulated", "unknown"]
    cpu_flags: tuple[str, ...]  # the bf16 flags found in the CPU's feature list

    @property
    def summary(self) -> str:
        if self.gpu:
            return "native on GPU"
        if self.cpu == "native":
            return f"native on CPU ({', '.join(self.cpu_flags)})"
        if self.cpu == "emulated":
            return "emulated on CPU (slow; fp32 preferred)"
        return "unknown"

    def to_dict(self) -> dict[str, Any]:
        return {"gpu": self.gpu, "cpu": self.cpu, "cpu_flags": list(self.cpu_flags), "summary": self.summary}


@dataclass(frozen=True)
class HardwareInfo:
    os: str  # platform.system(): "Linux", "Darwin", "Windows"
    machine: str  # platform.machine(): "x86_64", "arm64", ...
    cpu_physical_cores: int
    cpu_logical_cores: int
    ram_total_bytes: int
    ram_available_bytes: int
    disk_path: str
    disk_free_bytes: int
    gpus: tuple[GpuInfo, ...]
    driver_version: str | None  # NVIDIA driver, e.g. "550.54.15"
    cuda_driver_version: str | None  # highest CUDA the driver supports, e.g. "12.4"
    mps: bool  # Apple-silicon Metal backend (PyTorch "mps")
    bf16: Bf16Support
    notes: tuple[str, ...]
    # Where the figures come from when not this machine's own probe: a container's (runtime/probe_plan.py).
    source: str | None = None

    @property
    def has_cuda(self) -> bool:
        return bool(self.gpus)

    @property
    def largest_gpu(self) -> GpuInfo | None:
        return max(self.gpus, key=lambda g: g.vram_total_bytes, default=None)

    @property
    def preferred_precision(self) -> Literal["bf16", "fp16", "fp32"]:
        """The training precision before any measurement (hardware.precision.rule_precision)."""
        from forgellm.hardware.precision import rule_precision

        return rule_precision(self).precision

    @property
    def accelerator(self) -> str:
        return accelerator_summary(self.gpus, self.mps)

    def to_dict(self) -> dict[str, Any]:
        data = {f: getattr(self, f) for f in self.__dataclass_fields__}
        data["gpus"] = [g.to_dict() for g in self.gpus]
        data["bf16"] = self.bf16.to_dict()
        data["notes"] = list(self.notes)
        data["accelerator"] = self.accelerator
        data["preferred_precision"] = self.preferred_precision
        return data


def arch_family(major: int, minor: int) -> str:
    """NVIDIA architecture family of a compute capability (sm_<major><minor>)."""
    if major >= 10:
        return "blackwell"  # sm_100 (B200), sm_120 (RTX 50xx)
    if major == 9:
        return "hopper"
    if major == 8:
        return "ada" if minor >= 9 else "ampere"  # sm_89 is Ada; sm_80/86/87 Ampere
    if major == 7:
        return "turing" if minor >= 5 else "volta"  # sm_72 (Xavier) is Volta-class
    return "older"


def accelerator_summary(gpus: tuple[GpuInfo, ...], mps: bool) -> str:
    """One line for humans: "NVIDIA H100 (79.6 GiB, hopper)", "2x ... each", "Apple MPS", "CPU only"."""
    if gpus:
        names = {g.name for g in gpus}
        first = gpus[0]
        if len(gpus) == 1 or len(names) == 1:
            prefix = f"{len(gpus)}x " if len(gpus) > 1 else ""
            each = " each" if len(gpus) > 1 else ""
            return f"{prefix}{first.name} ({_gib(first.vram_total_bytes)}{each}, {first.arch})"
        return " + ".join(f"{g.name} ({_gib(g.vram_total_bytes)}, {g.arch})" for g in gpus)
    return "Apple MPS (unified memory)" if mps else "CPU only"


def detect_mps(system: str, machine: str) -> bool:
    """Apple silicon under macOS has the Metal backend; Intel Macs do not."""
    return system == "Darwin" and machine in ("arm64", "aarch64")


def cpu_bf16_flags(cpuinfo_text: str) -> tuple[str, ...]:
    """bf16-related flags in /proc/cpuinfo text (x86 'flags' or Arm 'Features' lines)."""
    found: set[str] = set()
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            found.update(f for f in value.split() if f in CPU_BF16_FLAGS)
    return tuple(f for f in CPU_BF16_FLAGS if f in found)


def bf16_support(gpus: tuple[GpuInfo, ...], cpuinfo_text: str | None) -> Bf16Support:
    """Native where a GPU is Ampere+ or the CPU has bf16 instructions; emulated on other CPUs."""
    flags = cpu_bf16_flags(cpuinfo_text) if cpuinfo_text is not None else ()
    if flags:
        cpu: Literal["native", "emulated", "unknown"] = "native"
    else:
        cpu = "emulated" if cpuinfo_text is not None else "unknown"
    return Bf16Support(gpu=bool(gpus) and all(g.bf16 for g in gpus), cpu=cpu, cpu_flags=flags)


def probe_hardware(
    path: str | os.PathLike[str] = ".",
    *,
    nvml: Any = None,
    cpuinfo_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> HardwareInfo:
    """Probe this machine. ``nvml`` is a pynvml-like module (default: the real one, imported here);
    ``cpuinfo_path`` defaults to $FORGE_CPUINFO, else /proc/cpuinfo."""
    notes: list[str] = []
    environ = os.environ if env is None else env
    if nvml is None:
        nvml = _import_pynvml(notes)
    gpus, driver, cuda = read_nvidia_gpus(nvml, notes) if nvml is not None else ((), None, None)
    gpus = _visible_gpus(gpus, environ, notes)
    cpuinfo_path = cpuinfo_path or environ.get(CPUINFO_ENV) or "/proc/cpuinfo"

    system, machine = platform.system(), platform.machine()
    mps = detect_mps(system, machine)
    if mps:
        notes.append("Apple MPS: bf16 needs macOS 14+; QLoRA (bitsandbytes) needs an NVIDIA GPU.")
    memory = psutil.virtual_memory()
    logical = psutil.cpu_count(logical=True) or 1
    disk_path = _existing_ancestor(Path(path))
    return HardwareInfo(
        os=system,
        machine=machine,
        cpu_physical_cores=psutil.cpu_count(logical=False) or logical,
        cpu_logical_cores=logical,
        ram_total_bytes=int(memory.total),
        ram_available_bytes=int(memory.available),
        disk_path=str(disk_path),
        disk_free_bytes=int(shutil.disk_usage(disk_path).free),
        gpus=gpus,
        driver_version=driver,
        cuda_driver_version=cuda,
        mps=mps,
        bf16=bf16_support(gpus, _read_text(cpuinfo_path)),
        notes=tuple(notes),
    )


def read_nvidia_gpus(nvml: Any, notes: list[str]) -> tuple[tuple[GpuInfo, ...], str | None, str | None]:
    """(GPUs, driver version, CUDA driver version) from a pynvml-like module; never raises."""
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError subclasses: library not found, driver not loaded, ...
        notes.append(f"No NVIDIA GPU usable (NVML: {_text(exc) or type(exc).__name__}).")
        return (), None, None
    try:
        driver = _optional(lambda: _text(nvml.nvmlSystemGetDriverVersion()))
        cuda = _optional(lambda: _cuda_version(nvml.nvmlSystemGetCudaDriverVersion()))
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as exc:
            notes.append(f"NVML could not count GPUs: {_text(exc)}.")
            return (), driver, cuda
        gpus = []
        for index in range(count):
            try:
                gpus.append(_read_gpu(nvml, index))
            except Exception as exc:  # one broken GPU (fallen off the bus) must not hide the others
                notes.append(f"GPU {index} skipped: NVML error {_text(exc)}.")
        return tuple(gpus), driver, cuda
    finally:
        _optional(nvml.nvmlShutdown)


def _read_gpu(nvml: Any, index: int) -> GpuInfo:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
    return GpuInfo(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        vram_total_bytes=int(memory.total),
        vram_free_bytes=int(memory.free),
        compute_capability=f"{major}.{minor}",
        arch=arch_family(int(major), int(minor)),
    )


def _visible_gpus(gpus: tuple[GpuInfo, ...], env: Mapping[str, str], notes: list[str]) -> tuple[GpuInfo, ...]:
    """Honour CUDA_VISIBLE_DEVICES (NVML ignores it, but training will only see those GPUs)."""
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is None or not gpus:
        return gpus
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not all(v.lstrip("-").isdigit() for v in items):
        notes.append("CUDA_VISIBLE_DEVICES uses GPU UUIDs; all GPUs are listed.")
        return gpus
    chosen: list[GpuInfo] = []
    for item in items:
        # CUDA stops at the first invalid index, e.g. "-1" hides every GPU.
        matches = [g for g in gpus if g.index == int(item)]
        if not matches:
            break
        chosen.append(matches[0])
    notes.append(f"CUDA_VISIBLE_DEVICES={value!r}: {len(chosen)} of {len(gpus)} GPUs visible.")
    return tuple(chosen)


def _import_pynvml(notes: list[str]) -> Any:
    try:
        import pynvml  # nvidia-ml-py; loads libnvidia-ml lazily in nvmlInit
    except ImportError:
        notes.append("nvidia-ml-py is not installed; NVIDIA GPUs cannot be detected.")
        return None
    return pynvml


def _cuda_version(value: int) -> str:
    # NVML encodes CUDA 12.4 as 12040.
    return f"{value // 1000}.{(value % 1000) // 10}"


def _text(value: Any) -> str:
    # Older nvidia-ml-py versions return bytes for names and versions.
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _optional(call: Any) -> Any:
    try:
        return call()
    except Exception:
        return None


def _read_text(path: str | os.PathLike[str]) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def _existing_ancestor(path: Path) -> Path:
    """The project folder may not exist yet; measure the disk it will be created on."""
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"
