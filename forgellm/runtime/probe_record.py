"""The record of `forge docker probe`: what a container of one image saw, and whether that image can train
on the GPUs it saw.

``ContainerProbe`` is machine-level state (FORGE_HOME/docker/probes/<tag>.json, one per image tag), written
by ``probe_run.probe_image`` and read by `forge plan` (the container's figures) and by whatever starts
training in a container (``check_image_for_gpus`` / ``require_image_serves`` before it starts). It keeps
the engine's image id it was made from: a rebuilt or removed image makes it stale (probe_run.saved_probe).

The arch rule itself lives in images.serves; here it is applied to each GPU the container saw, together
with the driver rule (the driver's CUDA must be at least the CUDA torch was built for).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from forgellm.errors import ErrorCode, ForgeError
from forgellm.project.record_io import RECORD_VERSION, as_dict, as_list, as_str, known_fields, read_object, write_object
from forgellm.runtime.images import arch_for_capability, serves

# The oldest Linux driver of each CUDA release (NVIDIA's CUDA toolkit release notes, table 3): what "update
# the driver" means for an image's torch build.
_DRIVER_FOR_CUDA = {"12.1": "530.30", "12.4": "550.54", "12.6": "560.28", "12.8": "570.26", "12.9": "575.51",
                    "13.0": "580.65"}  # fmt: skip


@dataclass
class ContainerProbe:
    """One image's probe: the container's JSON (runtime/probe.py) and how it was made."""

    tag: str = ""  # the image probed, e.g. forge:hopper
    image_id: str | None = None  # the engine's id of that image when probed (sha256:...)
    made_at: str | None = None  # ISO time, UTC
    host_gpus: list[dict[str, Any]] = field(default_factory=list)  # the host's NVML GPUs (name, capability)
    gpus_requested: bool = False  # the container was given the host's GPUs (device requests)
    gpu_note: str | None = None  # why it was not, when the host has GPUs
    container: dict[str, Any] = field(default_factory=dict)  # the JSON runtime/probe.py printed
    version: int = RECORD_VERSION

    # What the container saw, read from ``container``.
    @property
    def hardware(self) -> dict[str, Any]:
        return as_dict(self.container.get("hardware"))

    @property
    def torch(self) -> dict[str, Any] | None:
        seen = self.container.get("torch")
        return seen if isinstance(seen, dict) else None

    @property
    def limits(self) -> dict[str, Any]:
        return as_dict(self.container.get("limits"))

    @property
    def gpus(self) -> list[dict[str, Any]]:
        """The GPUs the container sees: NVML's, else torch's (an image whose NVML library is missing)."""
        found = [g for g in as_list(self.hardware.get("gpus")) if isinstance(g, dict)]
        if found or self.torch is None:
            return found
        return [{"index": d.get("index"), "name": d.get("name"), "compute_capability": d.get("capability"),
                 "vram_total_bytes": d.get("total_memory_bytes"), "vram_free_bytes": d.get("total_memory_bytes")}
                for d in as_list(self.torch.get("devices")) if isinstance(d, dict)]  # fmt: skip

    @property
    def notes(self) -> list[str]:
        return [str(n) for n in [*as_list(self.container.get("notes")), *as_list(self.hardware.get("notes"))]]

    @property
    def summary(self) -> str:
        """One line: where figures come from (the plan's rationale quotes it)."""
        image = (self.image_id or "unknown image")[:19]
        return f"`forge docker probe` of {self.tag} (image {image}, {(self.made_at or '')[:10]})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContainerProbe:
        record = known_fields(cls, data)
        record.tag = as_str(record.tag) or ""
        record.image_id = as_str(record.image_id)
        record.container = as_dict(record.container)
        record.host_gpus = [g for g in as_list(record.host_gpus) if isinstance(g, dict)]
        return record

    def save(self, path: Path | None = None) -> Path:
        target = path or probe_path(self.tag)
        write_object(target, self.to_dict())
        return target

    @classmethod
    def load(cls, path: Path) -> ContainerProbe | None:
        """None when the file is missing or damaged."""
        data = read_object(path)
        return cls.from_dict(data) if data is not None else None


def probes_dir() -> Path:
    from forgellm.config.settings import forge_home

    return forge_home() / "docker" / "probes"


def probe_path(tag: str) -> Path:
    """Where the probe of an image tag is kept: forge:hopper -> FORGE_HOME/docker/probes/forge_hopper.json."""
    return probes_dir() / (re.sub(r"[^A-Za-z0-9_.-]+", "_", tag) + ".json")


def check_image_for_gpus(probe: ContainerProbe) -> list[str]:
    """Why this image cannot train on the GPUs its container saw, one sentence each ([] = it can).

    Checked: each GPU's compute capability against the image's torch arch flags (images.serves), the
    driver's CUDA against the CUDA torch was built for, GPUs on the host that never reached the container,
    and a CPU build of torch where GPUs are visible. The runner calls ``require_image_serves`` before
    training in a container; `forge docker probe` prints these.
    """
    torch, gpus = probe.torch, probe.gpus
    problems: list[str] = []
    if probe.host_gpus and not gpus:
        why = probe.gpu_note or "the container sees none of them"
        problems.append(f"This machine has {len(probe.host_gpus)} NVIDIA GPU(s) but the container sees none: {why}.")
    if torch is None:
        return [*problems, f"torch is not importable in {probe.tag}: it cannot train. Rebuild it (forge docker build)."]
    if not gpus:
        return problems
    if not torch.get("cuda"):
        right = right_arch([str(g.get("compute_capability")) for g in gpus])
        problems.append(f"{probe.tag} has torch's CPU build ({torch.get('version')}) and would not use the "
                        f"{len(gpus)} GPU(s) the container sees: use {_use(right)}.")  # fmt: skip
        return problems
    flags = [str(f) for f in as_list(torch.get("arch_flags"))]
    for gpu in gpus:
        capability = str(gpu.get("compute_capability"))
        if not serves(flags, capability):
            problems.append(
                f"GPU {gpu.get('index')} ({gpu.get('name')}, compute capability {capability}) cannot run "
                f"{probe.tag}'s torch {torch.get('version')} (arch flags {' '.join(flags) or 'none'}): "
                f"use {_use(right_arch([capability]))}."
            )
    problems += _driver_problems(probe.hardware.get("cuda_driver_version"), torch.get("cuda"),
                                 probe.hardware.get("driver_version"))  # fmt: skip
    if not torch.get("cuda_available"):
        problems.append(f"torch {torch.get('version')} in {probe.tag} sees no CUDA device although NVML sees "
                        f"{len(gpus)}: {_torch_note(probe)}")  # fmt: skip
    return problems


def _driver_problems(driver_cuda: Any, torch_cuda: Any, driver: Any) -> list[str]:
    if not driver_cuda or not torch_cuda or _version(str(driver_cuda)) >= _version(str(torch_cuda)):
        return []
    needed = _DRIVER_FOR_CUDA.get(str(torch_cuda))
    at_least = f" (at least {needed} on Linux)" if needed else ""
    return [f"The NVIDIA driver {driver or ''} supports CUDA {driver_cuda}, older than the CUDA {torch_cuda} the "
            f"image's torch was built for: update the NVIDIA driver{at_least}."]  # fmt: skip


def require_image_serves(probe: ContainerProbe) -> None:
    """Raise DOCKER_ARCH_MISMATCH when ``check_image_for_gpus`` finds a problem: for a caller that must stop
    (training in a container would fail with "no kernel image is available" or a CUDA driver error);
    DOCKER_GPU_UNAVAILABLE when the host's GPUs never reached the container (no NVIDIA toolkit)."""
    problems = check_image_for_gpus(probe)
    if not problems:
        return
    if probe.host_gpus and not probe.gpus:  # not the image's fault: the engine did not pass the GPUs
        from forgellm.runtime.engine import TOOLKIT_INSTALL

        raise ForgeError(
            f"The container of {probe.tag} sees none of this machine's {len(probe.host_gpus)} NVIDIA GPU(s).",
            details=problems,
            fix=TOOLKIT_INSTALL,
            code=ErrorCode.DOCKER_GPU_UNAVAILABLE,
            data={"tag": probe.tag},
        )
    capabilities = [str(g.get("compute_capability")) for g in probe.gpus or probe.host_gpus]
    right = right_arch(capabilities)
    raise ForgeError(
        f"{probe.tag} cannot train on this machine's GPUs.",
        details=problems,
        fix=_fix(problems, right),
        code=ErrorCode.DOCKER_ARCH_MISMATCH,
        data={
            "tag": probe.tag,
            "capability": capabilities[0] if capabilities else None,
            "arch": right.name if right else None,
        },  # fmt: skip
    )


def right_arch(capabilities: list[str]):
    """The tag that serves these GPUs (images.arch_for_capability of the first one it knows), or None."""
    for capability in capabilities:
        try:
            arch = arch_for_capability(capability)
        except ValueError:
            continue
        if arch is not None:
            return arch
    return None


def _use(arch: Any) -> str:
    if arch is None:
        return "the local runtime (`runtime: local`): Forge's images serve Ampere (8.0) and newer GPUs"
    return f"{arch.tag} (`forge docker build --arch {arch.name}`)"


def _fix(problems: list[str], right: Any) -> str:
    if any("driver" in p for p in problems) and not any("cannot run" in p for p in problems):
        return "Update the NVIDIA driver, then run `forge docker probe` again."
    if right is None:
        return "Train with the local runtime (`runtime: local` in forge.yaml or `--runtime local`)."
    name = right.name
    return f"Build and use {right.tag}: `forge docker build --arch {name}`, then `forge docker probe --arch {name}`."


def _torch_note(probe: ContainerProbe) -> str:
    said = [n for n in probe.notes if "CUDA" in n]
    return said[0] if said else "see `forge docker probe`."


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:2])
