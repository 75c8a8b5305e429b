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
from forgellm.runtime.container import IMAGE_ENV

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
    from forgellm.runtime.images import arch_for_machine

    capabilities = [gpu.compute_capability for gpu in probe_hardware().gpus]
    arch = arch_for_machine(capabilities)
    return os.environ.get(IMAGE_ENV) or arch.tag, arch.name, capabilities


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
    from forgellm.runtime.engine import ENGINE_INSTALL, TOOLKIT_INSTALL, connect, gpu_passthrough_problem, image_attrs

    client, problem = connect()
    if client is None:
        if explicit:
            raise ForgeError(f"{purpose} in Docker needs an engine, but {problem}.", fix=ENGINE_INSTALL,
                             code=ErrorCode.DOCKER_UNAVAILABLE)  # fmt: skip
        return RuntimeChoice("local", f"auto: {problem}")
    image, arch, capabilities = machine_image()
    if image_attrs(client, image) is None:
        client.close()
        if explicit:
            raise ForgeError(
                f"{purpose} in Docker needs the image {image}, which the engine does not have.",
                fix=f"Build it: `forge docker build --arch {arch}`"
                + (f" (or unset {IMAGE_ENV})" if os.environ.get(IMAGE_ENV) else ""),
                code=ErrorCode.DOCKER_IMAGE_MISSING,
            )
        return RuntimeChoice("local", f"auto: the image {image} is not built (`forge docker build --arch {arch}`)")
    gpus = bool(capabilities)
    if gpus and gpu_work and (gpu_problem := gpu_passthrough_problem(client)):
        if explicit:
            client.close()
            raise ForgeError(f"{purpose} in Docker needs this machine's GPUs, but {gpu_problem}.",
                             fix=TOOLKIT_INSTALL, code=ErrorCode.DOCKER_GPU_UNAVAILABLE)  # fmt: skip
        client.close()
        return RuntimeChoice("local", f"auto: {gpu_problem}")
    why = "runtime: docker was asked for" if explicit else "auto: a Docker engine answers and the image is built"
    return RuntimeChoice("docker", why, image, gpus and gpu_work, client)
