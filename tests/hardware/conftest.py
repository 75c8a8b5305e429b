"""Hand-built HardwareInfo values for the hardware tests (no probing, no NVML)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from forgellm.hardware.probe import GpuInfo, HardwareInfo, arch_family, bf16_support

GIB = 2**30


def make_gpu(
    index: int = 0,
    name: str = "NVIDIA GeForce RTX 4090",
    vram_gib: float = 24.0,
    cc: tuple[int, int] = (8, 9),
    free_gib: float | None = None,
) -> GpuInfo:
    total = int(vram_gib * GIB)
    free = total if free_gib is None else int(free_gib * GIB)
    return GpuInfo(index, name, total, free, f"{cc[0]}.{cc[1]}", arch_family(*cc))


def make_hardware(
    gpus: tuple[GpuInfo, ...] = (),
    ram_available_gib: float = 20.0,
    cpuinfo: str | None = "flags\t: fpu sse avx2\n",
) -> HardwareInfo:
    return HardwareInfo(
        os="Linux",
        machine="x86_64",
        cpu_physical_cores=8,
        cpu_logical_cores=16,
        ram_total_bytes=int(32 * GIB),
        ram_available_bytes=int(ram_available_gib * GIB),
        disk_path="/",
        disk_free_bytes=100 * GIB,
        gpus=gpus,
        driver_version="550.54.15" if gpus else None,
        cuda_driver_version="12.4" if gpus else None,
        mps=False,
        bf16=bf16_support(gpus, cpuinfo),
        notes=(),
    )


@pytest.fixture
def rtx4090() -> HardwareInfo:
    # A 24 GB consumer card: NVML reports 24564 MiB.
    gpu = GpuInfo(0, "NVIDIA GeForce RTX 4090", 24564 * 2**20, 24000 * 2**20, "8.9", "ada")
    return make_hardware((gpu,))


@pytest.fixture
def cpu_only() -> HardwareInfo:
    return make_hardware()


@pytest.fixture
def gpu_factory() -> Callable[..., GpuInfo]:
    return make_gpu


@pytest.fixture
def hardware_factory() -> Callable[..., HardwareInfo]:
    return make_hardware
