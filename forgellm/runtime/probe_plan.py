"""`forge plan` on the figures of `forge docker probe`: when training will run in a container, the plan is
made for what the container sees (its GPUs, which may be fewer than the host's, and its CPU and memory
limits), not for the host.

Used only when the project's runtime is not ``local``, a probe of the image this machine would run is
saved, and the engine still has the image it was made from; otherwise the host's figures, with a note
saying why the probe was not used.
"""

from __future__ import annotations

import math
from typing import Any

from forgellm.hardware.probe import Bf16Support, GpuInfo, HardwareInfo, arch_family
from forgellm.runtime.probe_record import ContainerProbe, check_image_for_gpus, probe_path


def plan_hardware(host: HardwareInfo, config: Any) -> tuple[HardwareInfo, list[str]]:
    """The hardware to plan for, and notes for the user (a probe ignored, or what it found)."""
    from forgellm.runtime.probe_run import machine_image

    runtime = project_runtime(config)
    if runtime == "local":
        return host, []
    tag = machine_image(host)
    if not probe_path(tag).is_file():
        if runtime == "docker":
            return host, [f"runtime is docker but {tag} was never probed: planned with this machine's figures "
                          f"(`forge docker probe` reports what the container sees)."]  # fmt: skip
        return host, []
    from forgellm.runtime.engine import connect
    from forgellm.runtime.probe_run import saved_probe

    client, problem = connect()
    if client is None:
        return host, [f"The saved probe of {tag} was not used: {problem}, so its image cannot be checked."]
    try:
        probe, why = saved_probe(tag, client)
    finally:
        client.close()
    if probe is None:
        return host, [why] if why else []
    return container_hardware(probe, host), [f"{tag}: {p}" for p in check_image_for_gpus(probe)]


def project_runtime(config: Any) -> str:
    """forge.yaml's ``runtime`` (auto | local | docker); auto where the field does not exist (older Forge)."""
    value = getattr(config, "runtime", None)
    value = getattr(value, "value", value)  # an enum member
    return str(value) if isinstance(value, str) and value else "auto"


def container_hardware(probe: ContainerProbe, host: HardwareInfo) -> HardwareInfo:
    """The probe's figures as a HardwareInfo: the container's GPUs, driver, CPUs and RAM within its cgroup
    limits. The disk is the host's (the project is mounted from it) and so are the CPU's bf16 instructions
    (a container runs on the host's CPU; the host probe honours FORGE_CPUINFO)."""
    seen, limits = probe.hardware, probe.limits
    gpus = tuple(_gpu(i, g) for i, g in enumerate(probe.gpus))
    logical = _int(seen.get("cpu_logical_cores")) or host.cpu_logical_cores
    cap = min([c for c in (_cpus(limits.get("cpus")), _int(limits.get("cpu_affinity"))) if c] or [logical])
    ram_total = _int(seen.get("ram_total_bytes")) or host.ram_total_bytes
    ram_available = _int(seen.get("ram_available_bytes")) or host.ram_available_bytes
    limit = _int(limits.get("memory_bytes"))
    if limit:
        ram_total, ram_available = min(ram_total, limit), min(ram_available, limit)
    return HardwareInfo(
        os=str(seen.get("os") or host.os),
        machine=str(seen.get("machine") or host.machine),
        cpu_physical_cores=min(_int(seen.get("cpu_physical_cores")) or logical, cap),
        cpu_logical_cores=min(logical, cap),
        ram_total_bytes=ram_total,
        ram_available_bytes=ram_available,
        disk_path=host.disk_path,
        disk_free_bytes=host.disk_free_bytes,
        gpus=gpus,
        driver_version=seen.get("driver_version"),
        cuda_driver_version=seen.get("cuda_driver_version"),
        mps=False,
        bf16=Bf16Support(
            gpu=bool(gpus) and all(g.bf16 for g in gpus), cpu=host.bf16.cpu, cpu_flags=host.bf16.cpu_flags
        ),  # fmt: skip
        notes=tuple(probe.notes),
        source=probe.summary,
    )


def _gpu(position: int, gpu: dict[str, Any]) -> GpuInfo:
    capability = str(gpu.get("compute_capability") or "0.0")
    major, _, minor = capability.partition(".")
    total = _int(gpu.get("vram_total_bytes")) or 0
    return GpuInfo(
        index=_int(gpu.get("index")) if _int(gpu.get("index")) is not None else position,  # type: ignore[arg-type]
        name=str(gpu.get("name") or "GPU"),
        vram_total_bytes=total,
        vram_free_bytes=_int(gpu.get("vram_free_bytes")) or total,
        compute_capability=capability,
        arch=arch_family(int(major or 0), int(minor or 0)),
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _cpus(value: Any) -> int | None:
    """A CPU quota (1.5 CPUs) as whole cores for data workers: rounded up, at least 1."""
    return max(1, math.ceil(value)) if isinstance(value, (int, float)) and value > 0 else None
