"""Helpers of the planning tests: hand-built machines and an advisor test double (no probing, no network)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from forgellm.advisor.rules import RulesAdvisor
from forgellm.advisor.schemas import PlanProposal, PlanRequest
from forgellm.hardware.probe import GpuInfo, HardwareInfo, arch_family, bf16_support

GIB = 2**30
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def make_gpu(name: str, vram_gib: float, cc: tuple[int, int]) -> GpuInfo:
    total = int(vram_gib * GIB)
    return GpuInfo(0, name, total, total, f"{cc[0]}.{cc[1]}", arch_family(*cc))


def make_hardware(gpus: tuple[GpuInfo, ...] = (), *, ram_gib: float = 20.0, cores: int = 2) -> HardwareInfo:
    return HardwareInfo(
        os="Linux",
        machine="x86_64",
        cpu_physical_cores=cores,
        cpu_logical_cores=cores,
        ram_total_bytes=int(32 * GIB),
        ram_available_bytes=int(ram_gib * GIB),
        disk_path="/",
        disk_free_bytes=100 * GIB,
        gpus=gpus,
        driver_version="550.54.15" if gpus else None,
        cuda_driver_version="12.4" if gpus else None,
        mps=False,
        bf16=bf16_support(gpus, "flags\t: fpu sse avx2\n"),
        notes=(),
    )


class ScriptedAdvisor(RulesAdvisor):
    """The rules advisor, except that its plan is whatever ``plan(request)`` returns: a test double
    for an LLM advisor (good, hostile or absurd) that records the requests it was sent."""

    name = "scripted"

    def __init__(self, plan: Callable[[PlanRequest], PlanProposal]) -> None:
        super().__init__()
        self._plan = plan
        self.requests: list[PlanRequest] = []

    def propose_plan(self, request: PlanRequest) -> PlanProposal:
        self.requests.append(request)
        return self._plan(request)
