"""Forge's Docker images: one tag per GPU architecture of the brief, and which build serves each.

A torch CUDA build carries machine code (SASS, ``sm_XY``) for a list of compute capabilities and
optionally PTX (``compute_XY``) that the driver compiles for newer GPUs. SASS for ``sm_XY`` runs on a
GPU ``X.Z`` with ``Z >= Y`` of the same major version (an RTX 4090, 8.9, runs ``sm_86`` code), never
across majors (Blackwell's data-centre 10.0 and consumer 12.0 are different majors); the ``a``/``f``
variants (``sm_90a``) run only on exactly that GPU. PTX for ``compute_XY`` runs on any GPU ``>= X.Y``.
:func:`serves` is that rule; the build asserts it for every capability of a tag, and the probe checks it
for the GPU it sees.

One CUDA 12.8 build (torch's ``cu128`` wheels: sm_75..sm_120) serves Ampere, Ada, Hopper and Blackwell,
so the four GPU tags are one build tagged four times; CUDA 12.8 is the first with Blackwell (sm_100,
sm_120). B300 (10.3) needs CUDA 12.9 and is not a tag of the brief. The ``cpu`` tag is torch's CPU build.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

IMAGE_REPO = "forge"
# An image tag to run instead of forge:<arch> (an image of one's own, a registry copy, the tests' image).
IMAGE_ENV = "FORGE_DOCKER_IMAGE"


@dataclass(frozen=True)
class Variant:
    """One build of the Dockerfile: a torch flavour and the capabilities its build asserts."""

    name: str  # "cu128", "cpu": the build argument TORCH_VARIANT
    torch_index: str  # where pip finds this flavour of torch
    cuda: str | None  # the CUDA runtime of the torch build; None for the CPU build
    capabilities: tuple[str, ...]  # compute capabilities the build must serve ("8.0", ...)


CU128 = Variant(
    "cu128",
    "https://download.pytorch.org/whl/cu128",
    "12.8",
    ("8.0", "8.6", "8.9", "9.0", "10.0", "12.0"),
)
CPU = Variant("cpu", "https://download.pytorch.org/whl/cpu", None, ())


@dataclass(frozen=True)
class Arch:
    """A tag of the brief: the GPUs it is for and the build that serves them."""

    name: str  # "hopper": the tag is forge:hopper
    gpus: str  # for people: "RTX 30xx, A100"
    capabilities: tuple[str, ...]  # the compute capabilities of that family
    variant: Variant

    @property
    def tag(self) -> str:
        return f"{IMAGE_REPO}:{self.name}"


ARCHES: dict[str, Arch] = {
    arch.name: arch
    for arch in (
        Arch("blackwell", "RTX 50xx, B200, GB200, RTX PRO 6000", ("10.0", "12.0"), CU128),
        Arch("hopper", "H100, H200, GH200", ("9.0",), CU128),
        Arch("ada", "RTX 40xx, L4, L40S, RTX 6000 Ada", ("8.9",), CU128),
        Arch("ampere", "RTX 30xx, A100, A10, A40, A6000", ("8.0", "8.6", "8.7"), CU128),
        Arch("cpu", "no GPU", (), CPU),
    )
}


def arches_of(variant: Variant) -> list[Arch]:
    """Every tag one build of ``variant`` serves (the four GPU tags share the cu128 build)."""
    return [arch for arch in ARCHES.values() if arch.variant == variant]


def arch_for_capability(capability: str) -> Arch | None:
    """The tag of the family a GPU belongs to, by its compute capability (the family's nearest
    capability at or below it, same major); None before Ampere, whose GPUs run the local runtime."""
    major, minor = _version(capability)
    if (major, minor) < (8, 0):
        return None
    found = [
        (_version(c), arch)
        for arch in ARCHES.values()
        for c in arch.capabilities
        if _version(c)[0] == major and _version(c) <= (major, minor)
    ]
    return max(found, key=lambda pair: pair[0])[1] if found else None


_FLAG = re.compile(r"^(sm|compute)_(\d+)(\d)([af]?)$")


def serves(arch_flags: list[str] | tuple[str, ...], capability: str) -> bool:
    """Does a torch build with these arch flags (``torch.cuda.get_arch_list()``: "sm_80", "sm_90a",
    "compute_120") run on a GPU of this compute capability ("8.9")? See the module's docstring."""
    major, minor = _version(capability)
    for flag in arch_flags:
        found = _FLAG.match(flag.strip())
        if not found:
            continue
        kind, flag_major, flag_minor, suffix = found[1], int(found[2]), int(found[3]), found[4]
        if suffix:  # arch-specific code: exactly that GPU
            if kind == "sm" and (flag_major, flag_minor) == (major, minor):
                return True
            continue
        if kind == "sm" and flag_major == major and flag_minor <= minor:
            return True
        if kind == "compute" and (flag_major, flag_minor) <= (major, minor):
            return True
    return False


def unserved(arch_flags: list[str] | tuple[str, ...], capabilities: tuple[str, ...]) -> list[str]:
    """The capabilities among ``capabilities`` that a build with ``arch_flags`` cannot run on."""
    return [c for c in capabilities if not serves(arch_flags, c)]


def _version(capability: str) -> tuple[int, int]:
    major, _, minor = capability.partition(".")
    return int(major), int(minor or 0)


def arch_for_machine(gpu_capabilities: list[str]) -> Arch:
    """The tag for a machine: its largest family's tag when it has GPUs Forge's images serve (the first
    GPU's family; mixed families are unusual and share the cu128 build anyway), else ``cpu``."""
    for capability in gpu_capabilities:
        arch = arch_for_capability(capability)
        if arch is not None:
            return arch
    return ARCHES["cpu"]


def machine_image(gpu_capabilities: list[str], arch: str = "auto") -> tuple[str, Arch]:
    """(the image tag this machine runs, its arch): $FORGE_DOCKER_IMAGE when set and arch is auto,
    else forge:<arch> (auto: the tag of this machine's GPUs)."""
    chosen = arch_for_machine(gpu_capabilities) if arch == "auto" else ARCHES[arch]
    if arch == "auto" and os.environ.get(IMAGE_ENV):
        return os.environ[IMAGE_ENV], chosen
    return chosen.tag, chosen
