"""`forge docker build`: Forge's image for one arch, built by the engine from Forge's own context.

The engine builds without a tag; the image is tagged (``forge:<arch>`` for every arch its build
serves, and ``forge:<variant>``) only once the whole build, its arch check included, succeeded. So
an interrupted or failed build never leaves a half-built image under a tag, and the image the tag
named before is untouched.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgellm.errors import ErrorCode, ForgeError
from forgellm.runtime.context import write_context
from forgellm.runtime.engine import image_attrs, require_engine
from forgellm.runtime.images import ARCHES, IMAGE_REPO, Arch, arches_of

DEFAULT_BASE = "python:3.11-slim-bookworm"
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_DISK_FULL = ("no space left on device", "disk quota exceeded")
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # pip's red ERROR lines arrive with terminal colour codes


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    tags: list[str]
    seconds: float
    log_path: Path
    base_image: str


Step = Callable[[int, int, str], None]  # (step, of steps, instruction)
Line = Callable[[str], None]


def build_image(
    arch: Arch,
    *,
    base_image: str | None = None,
    local_base: bool = False,
    wheels: Path | None = None,
    no_cache: bool = False,
    log_dir: Path,
    on_step: Step | None = None,
    on_line: Line | None = None,
) -> BuildResult:
    """Build the image of ``arch``'s variant and tag it for every arch that build serves."""
    started = time.monotonic()
    on_line = on_line or (lambda _line: None)
    if wheels is not None and not wheels.is_dir():
        raise ForgeError(
            f"--wheels {wheels}: no such folder.",
            fix="Name a folder of wheels (`pip download -d DIR ...` on a machine with the package index).",
            code=ErrorCode.FILE_NOT_FOUND, data={"path": str(wheels)},
        )  # fmt: skip
    client = require_engine("Building Forge's image")
    base = _base(client, base_image, local_base, on_line)
    variant = arch.variant
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"build-{variant.name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    with tempfile.TemporaryDirectory(prefix="forge-build-") as scratch:
        context = write_context(Path(scratch) / "context.tar", variant, wheels)
        arguments = {
            "BASE_IMAGE": base,
            "TORCH_VARIANT": variant.name,
            "TORCH_INDEX": variant.torch_index,
            "CAPABILITIES": " ".join(variant.capabilities),
            "PIP_OFFLINE": "1" if wheels is not None else "0",
            "LLAMA_CPP_VERSION": context.llama_cpp_version,
        }
        labels = {  # on the finished image (see the Dockerfile: as build arguments they would defeat the cache)
            "org.opencontainers.image.version": context.forge_version,
            "io.forgellm.source": context.forge_source,
            "io.forgellm.base-image": base,
            "io.forgellm.built-from": f"wheelhouse {wheels} ({context.wheels} files)" if wheels else "network",
        }
        with context.path.open("rb") as tar, log_path.open("w", encoding="utf-8") as log:
            log.write(f"forge docker build --arch {arch.name}: base {base}, arguments {arguments}, labels {labels}\n")
            stream = client.api.build(
                fileobj=tar, custom_context=True, buildargs=arguments, labels=labels, nocache=no_cache,
                rm=True, forcerm=True, pull=False, decode=True,
            )  # fmt: skip
            image_id = _follow(stream, log, on_step, on_line, arch)
    tags = _tag(client, image_id, arch)
    client.close()
    return BuildResult(image_id, tags, round(time.monotonic() - started, 1), log_path, base)


def _base(client: Any, base_image: str | None, local_base: bool, say: Line) -> str:
    """The base image's name, made locally or pulled now, so a missing one fails here, plainly."""
    if local_base:
        from forgellm.runtime.base import ensure_local_base

        return ensure_local_base(client, say=say)
    base = base_image or DEFAULT_BASE
    if image_attrs(client, base) is None:
        say(f"pulling the base image {base}")
        try:
            client.images.pull(base)
        except Exception as exc:
            raise ForgeError(
                f"The base image {base} is not on this Docker engine and cannot be pulled "
                f"({' '.join(str(exc).split())[:300]}).",
                fix="Build on a base made on this machine, no registry needed: `forge docker build --local-base` "
                "(needs mmdebstrap), or `docker pull` the base where a registry is reachable.",
                code=ErrorCode.DOCKER_BUILD_FAILED, data={"base": base},
            ) from None  # fmt: skip
    return base


def _follow(stream: Any, log: Any, on_step: Step | None, on_line: Line, arch: Arch) -> str:
    """Read the engine's build messages to the end; the built image's id, or ForgeError."""
    image_id = None
    recent: deque[str] = deque(maxlen=40)
    try:
        for message in stream:
            if "error" in message:
                _fail(str(message.get("error") or message.get("errorDetail")), log, arch, list(recent))
            if isinstance(message.get("aux"), dict) and message["aux"].get("ID"):
                image_id = message["aux"]["ID"]
            text = _COLOUR.sub("", message.get("stream") or message.get("status") or "")
            log.write(text if text.endswith("\n") else text + "\n")
            for line in text.splitlines():
                line = line.rstrip()
                if not line:
                    continue
                recent.append(line)
                step = _STEP.match(line)
                if step and on_step is not None:
                    on_step(int(step[1]), int(step[2]), step[3])
                on_line(line)
    except KeyboardInterrupt:
        _close(stream)  # the engine stops a build whose client went away; nothing gets tagged
        raise
    except ForgeError:
        raise
    except Exception as exc:  # the connection to the engine broke mid-build
        _fail(f"{type(exc).__name__}: {exc}", log, arch, list(recent))
    if image_id is None:
        _fail("the engine ended the build without naming an image", log, arch, list(recent))
    return image_id


def _fail(reason: str, log: Any, arch: Arch, recent: list[str]) -> None:
    log.write(f"\nforge: the build failed: {reason}\n")
    log.flush()
    reason = " ".join(reason.split())
    if reason.startswith("The command '/bin/sh -c"):  # the whole RUN line says less than its own errors
        reason = "a step of the Dockerfile failed: " + reason[reason.rfind("returned") :]
    errors = [line for line in recent if line.startswith("ERROR") or "error:" in line.lower()]
    details = (errors or recent[-6:])[-8:]
    if any(marker in reason.lower() for marker in _DISK_FULL):
        raise ForgeError(
            f"The Docker engine ran out of disk space while building forge:{arch.name} ({reason[:300]}). "
            "No image was tagged.",
            fix="Free space where the engine keeps its data (`docker info --format '{{.DockerRootDir}}'`), e.g. "
            "`docker system prune` or `docker builder prune`, then build again.",
            code=ErrorCode.DISK_FULL, data={"path": "the Docker engine's data root"}, details=details,
        )  # fmt: skip
    raise ForgeError(
        f"Building forge:{arch.name} failed: {reason[:1500]}. No image was tagged.",
        fix=f"The whole build output is in {log.name}. A network build needs PyPI and download.pytorch.org; "
        "offline, pass a wheelhouse (`--wheels DIR`) and a local base (`--local-base`).",
        code=ErrorCode.DOCKER_BUILD_FAILED, data={"tag": f"{IMAGE_REPO}:{arch.name}"}, details=details,
    )  # fmt: skip


def _close(stream: Any) -> None:
    try:
        stream.close()
    except Exception:
        pass


def _tag(client: Any, image_id: str, arch: Arch) -> list[str]:
    """Tag the built image for every arch its variant serves, and for the variant itself."""
    names = [a.name for a in arches_of(arch.variant)]
    if arch.variant.name not in names:
        names.append(arch.variant.name)
    for name in names:
        client.api.tag(image_id, IMAGE_REPO, name, force=True)
    return [f"{IMAGE_REPO}:{name}" for name in names]


def arch_named(name: str) -> Arch:
    if name not in ARCHES:
        raise ForgeError(
            f"--arch {name}: not one of Forge's images.",
            fix=f"Use one of: auto, {', '.join(ARCHES)}.",
            code=ErrorCode.USAGE_INVALID,
        )
    return ARCHES[name]
