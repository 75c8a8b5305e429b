"""probe_hardware with a fake NVML module, the pure helpers, and the real probe on this machine."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pynvml
import pytest

from forgellm.hardware.probe import (
    Bf16Support,
    arch_family,
    bf16_support,
    cpu_bf16_flags,
    detect_mps,
    probe_hardware,
)

GIB = 2**30
NO_ENV: dict[str, str] = {}


class FakeNVMLError(Exception):
    """Stands in for pynvml.NVMLError: the probe must catch any exception NVML raises."""


@dataclass
class FakeMemory:
    total: int
    free: int
    used: int = 0


@dataclass
class FakeGpu:
    name: str | bytes
    total: int
    free: int
    cc: tuple[int, int]
    broken: bool = False  # every query on this GPU raises, like a GPU fallen off the bus


@dataclass
class FakeNVML:
    """The subset of the pynvml module the probe uses, with the same names and shapes."""

    gpus: list[FakeGpu] = field(default_factory=list)
    init_error: Exception | None = None
    driver: str | bytes = "550.54.15"
    cuda: int = 12040
    shutdown_calls: int = 0

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetName(self, handle: FakeGpu) -> str | bytes:
        return handle.name

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu) -> FakeMemory:
        if handle.broken:
            raise FakeNVMLError("GPU is lost")
        return FakeMemory(total=handle.total, free=handle.free)

    def nvmlDeviceGetCudaComputeCapability(self, handle: FakeGpu) -> tuple[int, int]:
        return handle.cc


@pytest.mark.parametrize(
    ("cc", "family"),
    [
        ((12, 0), "blackwell"),
        ((10, 0), "blackwell"),
        ((9, 0), "hopper"),
        ((8, 9), "ada"),
        ((8, 0), "ampere"),
        ((8, 6), "ampere"),
        ((8, 7), "ampere"),
        ((7, 5), "turing"),
        ((7, 0), "volta"),
        ((6, 1), "older"),
        ((3, 7), "older"),
    ],
)
def test_arch_family(cc: tuple[int, int], family: str) -> None:
    assert arch_family(*cc) == family


@pytest.mark.parametrize(
    ("cc", "family", "bf16"),
    [
        ((12, 0), "blackwell", True),
        ((9, 0), "hopper", True),
        ((8, 9), "ada", True),
        ((8, 6), "ampere", True),
        ((7, 5), "turing", False),
        ((7, 0), "volta", False),
        ((6, 1), "older", False),
    ],
)
def test_single_gpu_through_fake_nvml(cc: tuple[int, int], family: str, bf16: bool) -> None:
    nvml = FakeNVML([FakeGpu("NVIDIA Test", 16 * GIB, 15 * GIB, cc)])
    hw = probe_hardware(nvml=nvml, env=NO_ENV)
    (gpu,) = hw.gpus
    assert (gpu.arch, gpu.compute_capability, gpu.bf16) == (family, f"{cc[0]}.{cc[1]}", bf16)
    assert (gpu.vram_total_bytes, gpu.vram_free_bytes) == (16 * GIB, 15 * GIB)
    assert hw.bf16.gpu is bf16
    assert hw.preferred_precision == ("bf16" if bf16 else "fp16")
    assert hw.driver_version == "550.54.15"
    assert hw.cuda_driver_version == "12.4"
    assert hw.has_cuda
    assert family in hw.accelerator
    assert nvml.shutdown_calls == 1


def test_multi_gpu_mixed() -> None:
    nvml = FakeNVML(
        [
            FakeGpu("Tesla T4", 15 * GIB, 15 * GIB, (7, 5)),
            FakeGpu("NVIDIA A100-SXM4-80GB", 80 * GIB, 79 * GIB, (8, 0)),
        ]
    )
    hw = probe_hardware(nvml=nvml, env=NO_ENV)
    assert [g.index for g in hw.gpus] == [0, 1]
    assert hw.largest_gpu is not None and hw.largest_gpu.name == "NVIDIA A100-SXM4-80GB"
    # bf16 only when every GPU a run may use supports it.
    assert not hw.bf16.gpu
    assert hw.preferred_precision == "fp16"
    assert "Tesla T4" in hw.accelerator and "A100" in hw.accelerator


def test_identical_gpus_summarised() -> None:
    nvml = FakeNVML([FakeGpu("NVIDIA H100 80GB HBM3", 80 * GIB, 80 * GIB, (9, 0)) for _ in range(4)])
    hw = probe_hardware(nvml=nvml, env=NO_ENV)
    assert hw.accelerator == "4x NVIDIA H100 80GB HBM3 (80.0 GiB each, hopper)"


def test_nvml_init_failure_gives_no_gpus_and_a_note() -> None:
    nvml = FakeNVML(init_error=FakeNVMLError("Driver Not Loaded"))
    hw = probe_hardware(nvml=nvml, env=NO_ENV)
    assert hw.gpus == ()
    assert hw.accelerator in ("CPU only", "Apple MPS (unified memory)")
    assert any("Driver Not Loaded" in n for n in hw.notes)
    assert hw.driver_version is None and hw.cuda_driver_version is None


def test_real_nvml_error_type_is_caught() -> None:
    nvml = FakeNVML(init_error=pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    hw = probe_hardware(nvml=nvml, env=NO_ENV)
    assert hw.gpus == ()
    assert hw.notes


def test_broken_gpu_is_skipped_not_fatal() -> None:
    nvml = FakeNVML(
        [
            FakeGpu("NVIDIA L4", 24 * GIB, 24 * GIB, (8, 9), broken=True),
            FakeGpu("NVIDIA L4", 24 * GIB, 24 * GIB, (8, 9)),
        ]
    )
    hw = probe_hardware(nvml=nvml, env=NO_ENV)
    assert [g.index for g in hw.gpus] == [1]
    assert any("GPU 0 skipped" in n for n in hw.notes)
    assert nvml.shutdown_calls == 1


def test_bytes_from_old_nvml_versions_are_decoded() -> None:
    nvml = FakeNVML([FakeGpu(b"Tesla V100-SXM2-16GB", 16 * GIB, 16 * GIB, (7, 0))], driver=b"470.82.01")
    hw = probe_hardware(nvml=nvml, env=NO_ENV)
    assert hw.gpus[0].name == "Tesla V100-SXM2-16GB"
    assert hw.driver_version == "470.82.01"


@pytest.mark.parametrize(("value", "visible"), [("1", [1]), ("1,0", [1, 0]), ("", []), ("-1", []), ("0,7,1", [0])])
def test_cuda_visible_devices(value: str, visible: list[int]) -> None:
    nvml = FakeNVML([FakeGpu(f"GPU{i}", 8 * GIB, 8 * GIB, (8, 6)) for i in range(2)])
    hw = probe_hardware(nvml=nvml, env={"CUDA_VISIBLE_DEVICES": value})
    assert [g.index for g in hw.gpus] == visible


def test_cuda_visible_devices_with_uuids_keeps_all() -> None:
    nvml = FakeNVML([FakeGpu("GPU", 8 * GIB, 8 * GIB, (8, 6))])
    hw = probe_hardware(nvml=nvml, env={"CUDA_VISIBLE_DEVICES": "GPU-6d1f2c3a"})
    assert len(hw.gpus) == 1
    assert any("UUID" in n for n in hw.notes)


def test_cpu_bf16_flags() -> None:
    x86 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
    assert cpu_bf16_flags(x86) == ("avx512_bf16", "amx_bf16")
    assert cpu_bf16_flags(arm) == ("bf16",)
    assert cpu_bf16_flags("flags\t: fpu sse2 avx2\n") == ()
    # A flag name must match whole, not as a substring.
    assert cpu_bf16_flags("flags\t: avx512_bf16x\n") == ()


def test_bf16_support_cpu_native_emulated_unknown() -> None:
    native = bf16_support((), "flags\t: avx512_bf16\n")
    assert native == Bf16Support(gpu=False, cpu="native", cpu_flags=("avx512_bf16",))
    assert "native on CPU" in native.summary
    assert bf16_support((), "flags\t: avx2\n").cpu == "emulated"
    assert bf16_support((), None).cpu == "unknown"


def test_cpuinfo_read_from_given_path(tmp_path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t: avx2 amx_bf16\n")
    hw = probe_hardware(nvml=FakeNVML(), cpuinfo_path=cpuinfo, env=NO_ENV)
    assert hw.gpus == ()
    assert hw.bf16.cpu == "native"
    assert hw.preferred_precision == "fp32"  # native bf16 on a CPU is measured by the plan, not assumed
    missing = probe_hardware(nvml=FakeNVML(), cpuinfo_path=tmp_path / "nope", env=NO_ENV)
    assert missing.bf16.cpu == "unknown"
    assert missing.preferred_precision == "fp32"


def test_forge_cpuinfo_stands_in_for_the_real_cpu(tmp_path) -> None:
    """FORGE_CPUINFO (drills; the suite's fixed CPU, tests/conftest.py) replaces /proc/cpuinfo."""
    native, plain = tmp_path / "native", tmp_path / "plain"
    native.write_text("flags\t: avx2 avx512_bf16\n")
    plain.write_text("flags\t: avx2\n")
    assert probe_hardware(nvml=FakeNVML(), env={"FORGE_CPUINFO": str(native)}).bf16.cpu_flags == ("avx512_bf16",)
    assert probe_hardware(nvml=FakeNVML(), env={"FORGE_CPUINFO": str(plain)}).bf16.cpu == "emulated"


@pytest.mark.host_cpu
def test_host_cpu_marker_reads_the_real_cpuinfo() -> None:
    real = bf16_support((), Path("/proc/cpuinfo").read_text()) if Path("/proc/cpuinfo").exists() else None
    assert "FORGE_CPUINFO" not in os.environ
    assert real is None or probe_hardware(nvml=FakeNVML()).bf16 == real


@pytest.mark.parametrize(
    ("system", "machine", "mps"),
    [
        ("Darwin", "arm64", True),
        ("Darwin", "x86_64", False),
        ("Linux", "arm64", False),
        ("Linux", "x86_64", False),
    ],
)
def test_detect_mps(system: str, machine: str, mps: bool) -> None:
    assert detect_mps(system, machine) is mps


def test_real_probe_on_this_machine(tmp_path) -> None:
    # Default NVML: on a machine without a driver this must still succeed.
    hw = probe_hardware(tmp_path / "not" / "created" / "yet")
    assert hw.cpu_logical_cores >= hw.cpu_physical_cores >= 1
    assert 0 < hw.ram_available_bytes <= hw.ram_total_bytes
    assert hw.disk_free_bytes > 0
    assert hw.disk_path == str(tmp_path)
    if not hw.gpus:
        assert hw.accelerator in ("CPU only", "Apple MPS (unified memory)")
    data = json.loads(json.dumps(hw.to_dict()))
    assert {"gpus", "bf16", "accelerator", "notes", "ram_total_bytes", "cuda_driver_version"} <= set(data)


def test_to_dict_keys_with_gpu() -> None:
    hw = probe_hardware(nvml=FakeNVML([FakeGpu("NVIDIA L4", 24 * GIB, 20 * GIB, (8, 9))]), env=NO_ENV)
    gpu = hw.to_dict()["gpus"][0]
    assert gpu == {
        "index": 0,
        "name": "NVIDIA L4",
        "vram_total_bytes": 24 * GIB,
        "vram_free_bytes": 20 * GIB,
        "compute_capability": "8.9",
        "arch": "ada",
        "bf16": True,
    }


def test_results_are_frozen() -> None:
    hw = probe_hardware(nvml=FakeNVML(), env=NO_ENV)
    with pytest.raises(dataclasses.FrozenInstanceError):
        hw.gpus = ()  # type: ignore[misc]
