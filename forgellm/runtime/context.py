"""The build context of Forge's image, written by Forge itself: the Dockerfile, the exact library
versions of this install, Forge's own source and, for offline builds, a wheelhouse.

The container must train with the libraries Forge runs with here (a different transformers renders
a different chat template or loads a model differently), so the context's ``constraints.txt`` is this
environment's installed versions, and ``requirements.txt`` is Forge's own dependency list from its
installed metadata, plus what only the GPU images need. Forge's source goes in as files with a small
generated project file, so an installed Forge (no checkout) builds the same image as a checkout.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import forgellm
from forgellm.runtime.images import Variant

DOCKERFILE = Path(__file__).with_name("docker") / "Dockerfile"
# QLoRA's 4-bit kernels, only in the CUDA images (bitsandbytes' CPU path is not what Forge's QLoRA uses).
# 0.45 added Blackwell kernels; the version is a build argument of the Dockerfile's requirements.
GPU_REQUIREMENTS = ("bitsandbytes==0.48.2",)
# llama.cpp's quantizer (llama-cpp-python) when this install has none to copy the version from.
LLAMA_CPP_DEFAULT = "0.3.36"
_PACKAGE_SKIPPED = {"__pycache__"}


@dataclass(frozen=True)
class Context:
    path: Path  # the tar written
    forge_version: str
    forge_source: str  # fingerprint of Forge's source files (the image's io.forgellm.source label)
    llama_cpp_version: str
    wheels: int  # how many files of a wheelhouse went in (0: the build uses the network)


def package_files() -> list[tuple[str, Path]]:
    """Every file of the installed ``forgellm`` package, as (name in the package, path), sorted."""
    root = Path(forgellm.__file__).resolve().parent
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not _PACKAGE_SKIPPED.intersection(path.relative_to(root).parts):
            if path.suffix not in (".pyc", ".pyo"):
                found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)


def source_fingerprint() -> str:
    """sha256 (16 hex) of Forge's package files: an image built from other source is out of date."""
    digest = hashlib.sha256()
    for name, path in package_files():
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def forge_version() -> str:
    try:
        return metadata.version("forgellm")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def requirements(variant: Variant) -> list[str]:
    """Forge's runtime dependencies (its metadata, without extras) and the variant's own."""
    declared = metadata.requires("forgellm") or []
    runtime = [line for line in declared if "extra ==" not in line.replace('"', " ").replace("'", " ")]
    return runtime + (list(GPU_REQUIREMENTS) if variant.cuda else [])


def constraints() -> list[str]:
    """``name==version`` of every distribution installed here (local labels such as +cpu dropped: the
    image takes its own torch flavour of the same version), Forge itself left out."""
    pins = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name or _normal(name) == "forgellm":
            continue
        pins[_normal(name)] = f"{_normal(name)}=={dist.version.split('+')[0]}"
    return [pins[name] for name in sorted(pins)]


def llama_cpp_version() -> str:
    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        return LLAMA_CPP_DEFAULT


def project_file(version: str) -> str:
    """The project file Forge's source is installed with inside the image (no dependencies: the
    image installs them, pinned, in the layer before)."""
    return f"""[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "forgellm"
version = "{version}"
requires-python = ">=3.11"

[project.scripts]
forge = "forgellm.cli.main:run"

[tool.setuptools.packages.find]
include = ["forgellm*"]

[tool.setuptools.package-data]
"*" = ["*", "**/*"]
"""


def write_context(target: Path, variant: Variant, wheels: Path | None) -> Context:
    """Write the build context as a tar at ``target`` (the engine receives it as it is)."""
    version = forge_version()
    wheel_files = sorted(p for p in wheels.iterdir() if p.is_file()) if wheels is not None else []
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(DOCKERFILE, arcname="Dockerfile")
        _add_text(tar, "requirements.txt", "\n".join(requirements(variant)) + "\n")
        _add_text(tar, "constraints.txt", "\n".join(constraints()) + "\n")
        _add_text(tar, "wheels/README", "Wheels for an offline build (pip --no-index --find-links).\n")
        for path in wheel_files:
            tar.add(path, arcname=f"wheels/{path.name}")
        _add_text(tar, "forge-src/pyproject.toml", project_file(version))
        for name, path in package_files():
            tar.add(path, arcname=f"forge-src/forgellm/{name}")
    return Context(target, version, source_fingerprint(), llama_cpp_version(), len(wheel_files))


def _add_text(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
