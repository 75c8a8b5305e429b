"""Which runtime a stage uses: ``runtime: auto|local|docker`` (forge.yaml, or ``--runtime``).

auto is docker when an engine answers, the image for this machine exists and, for GPU work on a
machine with GPUs, the engine can pass them (NVIDIA Container Toolkit); otherwise local. Either way the
choice carries one sentence saying why, which the CLI prints and the run records. An explicit docker
with a problem is a ForgeError with its fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from forgellm.errors import ErrorCode, ForgeError
from forgellm.runtime.images import IMAGE_ENV

RUNTIMES = ("auto", "local", "docker")


@dataclass(frozen=True)
class RuntimeChoice:
    name: str  # local | docker
    reason: str
    image: str | None = None
    gpus: bool = False
    client: Any = None

    def line(self) -> str:
        where = f" (image {self.image})" if self.name == "docker" else ""
        return f"Runtime: {self.name}{where} — {self.reason}"

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "reason": self.reason, "image": self.image, "gpus": self.gpus}

    def runner(self) -> Any:
        from forgellm.runtime.runner import DockerRunner, LocalRunner

        if self.name == "docker":
            return DockerRunner(self.client, str(self.image), gpus=self.gpus)
        return LocalRunner()


def machine_image() -> tuple[str, str, list[str]]:
    """(image tag, arch name, GPU capabilities): FORGE_DOCKER_IMAGE when set, else the tag of this
    machine's GPUs (images.arch_for_machine)."""
    from forgellm.hardware.probe import probe_hardware
    from forgellm.runtime.images import machine_image as image_for

    capabilities = [gpu.compute_capability for gpu in probe_hardware().gpus]
    image, arch = image_for(capabilities)
    return image, arch.name, capabilities


def choose_runtime(requested: str, *, purpose: str, gpu_work: bool = True) -> RuntimeChoice:
    """The runtime for ``purpose`` ("training", "preparing the data", ...); ForgeError for an explicit
    docker that cannot run."""
    if requested not in RUNTIMES:
        raise ForgeError(
            f"Unknown runtime {requested!r}.", fix="Use one of: auto, local, docker.", code=ErrorCode.USAGE_INVALID
        )
    if requested == "local":
        return RuntimeChoice("local", "runtime: local was asked for")
    explicit = requested == "docker"
    from forgellm.runtime.engine import ENGINE_INSTALL, connect

    client, problem = connect()
    if client is None:
        if explicit:
            raise ForgeError(f"{purpose} in Docker needs an engine, but {problem}.", fix=ENGINE_INSTALL,
                             code=ErrorCode.DOCKER_UNAVAILABLE)  # fmt: skip
        return RuntimeChoice("local", f"auto: {problem}")
    try:
        choice = _docker_or_why(client, explicit, purpose, gpu_work)
    except BaseException:
        client.close()
        raise
    if choice.name != "docker":  # the docker runner keeps the client; nothing else needs it
        client.close()
    return choice


def _docker_or_why(client: Any, explicit: bool, purpose: str, gpu_work: bool) -> RuntimeChoice:
    """Docker, or local with the reason (auto); for an explicit docker, the reason as a ForgeError."""
    from forgellm.runtime.engine import TOOLKIT_INSTALL, gpu_passthrough_problem, image_attrs

    def refuse(reason: str, error: ForgeError) -> RuntimeChoice:
        if explicit:
            raise error
        return RuntimeChoice("local", f"auto: {reason}")

    image, arch, capabilities = machine_image()
    attrs = image_attrs(client, image)
    if attrs is None:
        return refuse(
            f"the image {image} is not built (`forge docker build --arch {arch}`)",
            ForgeError(
                f"{purpose} in Docker needs the image {image}, which the engine does not have.",
                fix=f"Build it: `forge docker build --arch {arch}`"
                + (f" (or unset {IMAGE_ENV})" if os.environ.get(IMAGE_ENV) else ""),
                code=ErrorCode.DOCKER_IMAGE_MISSING,
            ),
        )
    if (stale := _stale(attrs)) is not None:
        return refuse(
            f"the image {image} holds {stale} (`forge docker build --arch {arch}`)",
            ForgeError(
                f"{purpose} in Docker would run {stale}, so records written on one side could be misread on the "
                "other.",
                fix=f"Rebuild the image: `forge docker build --arch {arch}`.",
                code=ErrorCode.DOCKER_IMAGE_STALE, data={"tag": image},
            ),
        )  # fmt: skip
    gpus = bool(capabilities) and gpu_work
    if gpus and (gpu_problem := gpu_passthrough_problem(client)):
        return refuse(gpu_problem, ForgeError(f"{purpose} in Docker needs this machine's GPUs, but {gpu_problem}.",
                                              fix=TOOLKIT_INSTALL, code=ErrorCode.DOCKER_GPU_UNAVAILABLE))  # fmt: skip
    if gpus:  # the image's torch must run on the GPUs its container sees (probe, cached)
        from forgellm.runtime.probe_run import checked_probe

        try:
            checked_probe(image, client)
        except ForgeError as exc:
            if exc.code != ErrorCode.DOCKER_ARCH_MISMATCH:
                raise
            return refuse(exc.message, exc)
    why = "runtime: docker was asked for" if explicit else "auto: a Docker engine answers and the image is built"
    return RuntimeChoice("docker", why, image, gpus, client)


def _stale(attrs: dict[str, Any]) -> str | None:
    """What Forge the image holds when it is not this one (its io.forgellm.source label differs from this
    install's source); None when it is the same, or when the image carries no label (not built by
    `forge docker build`: an image of the user's own, trusted as it is)."""
    from forgellm.runtime.context import source_fingerprint

    labels = (attrs.get("Config") or {}).get("Labels") or {}
    source = labels.get("io.forgellm.source")
    if source is None or source == source_fingerprint():
        return None
    version = labels.get("org.opencontainers.image.version", "?")
    return f"Forge {version} built from other source than this Forge's"
