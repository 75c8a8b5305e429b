"""What a container of Forge's image sees: run inside it as ``python -m forgellm.runtime.probe``.

Prints one JSON object on stdout: the hardware probe (``hardware.probe.probe_hardware``: NVML's GPUs,
driver and the driver's CUDA, CPU, RAM, bf16), what torch sees (version, the CUDA it was built for, its
arch flags, each device's name, capability, memory and bf16) and the container's cgroup limits (CPUs and
memory: psutil reports the host's figures, training gets the container's). Every part is optional: a
missing torch, NVML or GPU is a note, never a traceback, so the host always gets an answer to parse.

The host side (running this in a container, the record it is saved as, the checks) is probe_record.py
and probe_run.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

PROBE_FORMAT = 1  # the layout of the JSON printed here; the host refuses a format it does not know
_NO_LIMIT = 2**60  # cgroup v1 writes "no memory limit" as a page-rounded 2**63-1


def collect(path: str = ".") -> dict[str, Any]:
    """Everything the probe prints; each part says in ``notes`` what it could not read."""
    notes: list[str] = []
    return {
        "format": PROBE_FORMAT,
        "hardware": _hardware(path, notes),
        "torch": _torch(notes),
        "limits": cgroup_limits(),
        "python": sys.version.split()[0],
        "notes": notes,
    }


def _hardware(path: str, notes: list[str]) -> dict[str, Any] | None:
    try:
        from forgellm.hardware.probe import probe_hardware

        return probe_hardware(path).to_dict()
    except Exception as exc:  # psutil missing from a broken image: the rest of the answer still counts
        notes.append(f"hardware probe failed: {type(exc).__name__}: {exc}")
        return None


def _torch(notes: list[str]) -> dict[str, Any] | None:
    try:
        import torch
    except Exception as exc:  # ImportError, or a torch whose CUDA libraries do not load
        notes.append(f"torch is not importable: {type(exc).__name__}: {exc}")
        return None
    seen: dict[str, Any] = {
        "version": str(torch.__version__),
        "cuda": torch.version.cuda,  # None for the CPU build
        "cuda_available": False,
        "device_count": 0,
        "arch_flags": [],
        "devices": [],
    }
    try:
        seen["arch_flags"] = list(torch.cuda.get_arch_list())
        seen["cuda_available"] = bool(torch.cuda.is_available())
        seen["device_count"] = int(torch.cuda.device_count()) if seen["cuda_available"] else 0
        for index in range(seen["device_count"]):
            props = torch.cuda.get_device_properties(index)
            seen["devices"].append({
                "index": index,
                "name": props.name,
                "capability": f"{props.major}.{props.minor}",
                "total_memory_bytes": int(props.total_memory),
                "bf16": _bf16(torch, index),
            })  # fmt: skip
    except Exception as exc:  # a driver too old for this torch raises here: that is a finding, not a crash
        notes.append(f"torch could not use CUDA: {type(exc).__name__}: {exc}")
    return seen


def _bf16(torch: Any, index: int) -> bool | None:
    try:
        with torch.cuda.device(index):
            return bool(torch.cuda.is_bf16_supported())
    except Exception:
        return None


def cgroup_limits(root: Path = Path("/sys/fs/cgroup")) -> dict[str, Any]:
    """The CPUs and memory this process may use: cgroup v2 (``memory.max``, ``cpu.max``), else v1, and the
    CPUs it may be scheduled on; None where there is no limit."""
    memory = _read_limit(root / "memory.max") or _read_limit(root / "memory" / "memory.limit_in_bytes")
    cpus: float | None = None
    quota = _read(root / "cpu.max")
    if quota:  # "max 100000" or "150000 100000"
        value, _, period = quota.partition(" ")
        if value != "max" and period:
            cpus = int(value) / int(period)
    else:
        value, period = _read(root / "cpu" / "cpu.cfs_quota_us"), _read(root / "cpu" / "cpu.cfs_period_us")
        if value and period and int(value) > 0:
            cpus = int(value) / int(period)
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {"memory_bytes": memory, "cpus": cpus, "cpu_affinity": affinity}


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_limit(path: Path) -> int | None:
    text = _read(path)
    if not text or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value < _NO_LIMIT else None


def main() -> int:
    try:
        answer = collect()
    except Exception as exc:  # never a traceback: the host parses whatever comes
        answer = {"format": PROBE_FORMAT, "notes": [f"probe failed: {type(exc).__name__}: {exc}"]}
    json.dump(answer, sys.stdout, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
