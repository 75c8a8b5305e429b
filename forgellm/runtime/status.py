"""`forge docker status`: the engine, Forge's images with their tags and what they were built from, and
which image this machine would run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from forgellm.runtime.base import BASE_REPO
from forgellm.runtime.context import source_fingerprint
from forgellm.runtime.engine import connect, gpu_passthrough_problem
from forgellm.runtime.images import IMAGE_REPO, arch_for_machine


@dataclass(frozen=True)
class ImageStatus:
    image_id: str  # sha256:... shortened to 12 hex
    tags: list[str]
    created: str
    size_bytes: int
    forge_version: str | None
    variant: str | None
    capabilities: str | None
    base_image: str | None
    built_from: str | None
    current: bool | None  # built from this Forge's source (None: not a Forge image, e.g. a base)


@dataclass(frozen=True)
class DockerStatus:
    engine: str | None  # the engine's version; None when none answers
    problem: str | None  # why no engine answers
    gpu_passthrough: str | None  # why GPUs cannot be passed (None: they can, or no engine)
    machine_arch: str  # the tag this machine would run
    images: list[ImageStatus] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def machine_image(self) -> ImageStatus | None:
        wanted = f"{IMAGE_REPO}:{self.machine_arch}"
        return next((image for image in self.images if wanted in image.tags), None)


def docker_status(gpu_capabilities: list[str]) -> DockerStatus:
    machine_arch = arch_for_machine(gpu_capabilities).name
    client, problem = connect()
    if client is None:
        return DockerStatus(None, problem, None, machine_arch)
    try:
        version = str(client.version().get("Version", "?"))
        passthrough = gpu_passthrough_problem(client) if gpu_capabilities else None
        source = source_fingerprint()
        images = [_image(image.attrs, source) for image in client.images.list()]
        images = [i for i in images if any(t.startswith((f"{IMAGE_REPO}:", f"{BASE_REPO}:")) for t in i.tags)]
    finally:
        client.close()
    images.sort(key=lambda i: i.tags)
    return DockerStatus(version, None, passthrough, machine_arch, images)


def _image(attrs: dict[str, Any], source: str) -> ImageStatus:
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    forge = "io.forgellm.variant" in labels
    return ImageStatus(
        image_id=attrs["Id"].split(":")[-1][:12],
        tags=sorted(attrs.get("RepoTags") or []),
        created=str(attrs.get("Created", ""))[:19].replace("T", " "),
        size_bytes=int(attrs.get("Size") or 0),
        forge_version=labels.get("org.opencontainers.image.version"),
        variant=labels.get("io.forgellm.variant"),
        capabilities=labels.get("io.forgellm.capabilities"),
        base_image=labels.get("io.forgellm.base-image"),
        built_from=labels.get("io.forgellm.built-from"),
        current=labels.get("io.forgellm.source") == source if forge else None,
    )
