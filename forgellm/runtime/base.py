"""A Debian base image made on this machine, for engines that cannot pull one (offline, air-gapped,
no registry): mmdebstrap builds a minimal Debian root from Debian's package mirror and
``docker import`` turns its tarball into an image. The Dockerfile then builds on it (``BASE_IMAGE``).

The result is cached by what goes into it (suite, variant, packages, this module's format): the
tarball under the Docker cache folder, the image as ``forge-base:<suite>-<key>``. A later build
reuses the image when the engine still has it, else imports the cached tarball (seconds), and only
runs mmdebstrap (~25 s) when neither exists.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from forgellm.errors import ErrorCode, ForgeError
from forgellm.runtime.engine import image_attrs

BASE_REPO = "forge-base"
SUITE = "bookworm"  # Debian 12: Python 3.11, the Python the pinned wheels are built for
VARIANT = "minbase"
# What the Dockerfile needs from the base: Python with venv (its pip and setuptools wheels), OpenMP (llama.cpp's
# library links it), certificates for a build that does use the network.
PACKAGES = ("python3", "python3-venv", "libgomp1", "ca-certificates")
_FORMAT = "1"  # changes whenever what goes into the base changes
CACHE_ENV = "FORGE_DOCKER_CACHE"
MMDEBSTRAP_INSTALL = "`sudo apt-get install mmdebstrap` (Debian/Ubuntu)"


def docker_cache_dir() -> Path:
    """Where Forge keeps what it makes for Docker (base tarballs): FORGE_DOCKER_CACHE, else FORGE_HOME/docker."""
    from forgellm.config.settings import forge_home

    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else forge_home() / "docker"


def build_log_dir() -> Path:
    """Where `forge docker build` writes the whole output of each build."""
    return docker_cache_dir() / "build-logs"


def base_key(suite: str = SUITE, packages: tuple[str, ...] = PACKAGES) -> str:
    text = f"{_FORMAT}|{suite}|{VARIANT}|{','.join(sorted(packages))}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def base_tag(suite: str = SUITE, packages: tuple[str, ...] = PACKAGES) -> str:
    return f"{BASE_REPO}:{suite}-{base_key(suite, packages)}"


def ensure_local_base(client, *, say: Callable[[str], None] = lambda _line: None) -> str:
    """The local base image's tag, made (or imported from the cached tarball) when the engine lacks it."""
    tag = base_tag()
    if image_attrs(client, tag) is not None:
        return tag
    tarball = docker_cache_dir() / f"base-{SUITE}-{base_key()}.tar"
    if not tarball.is_file():
        say(f"making a Debian {SUITE} base with mmdebstrap ({', '.join(PACKAGES)}); about half a minute, once")
        make_rootfs(tarball)
    say(f"importing {tarball.name} as {tag}")
    repository, _, name = tag.partition(":")
    # Streamed in chunks of 1 MiB: the SDK takes a path for a URL, and iterates a file object by lines.
    with tarball.open("rb") as data:
        client.api.import_image(
            src=iter(lambda: data.read(1 << 20), b""), stream_src=True, repository=repository, tag=name,
            changes=["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 'CMD ["/bin/sh"]'],
        )  # fmt: skip
    return tag


def make_rootfs(tarball: Path) -> None:
    """mmdebstrap into ``<name>.part.tar``, renamed when complete: an interrupted run leaves no tarball
    that a later build would take for a whole one."""
    if shutil.which("mmdebstrap") is None:
        raise ForgeError(
            "Making a base image on this machine needs mmdebstrap, which is not installed.",
            fix=f"Install it ({MMDEBSTRAP_INSTALL}), or name a base image the engine has or can pull "
            "(`--base-image python:3.11-slim-bookworm`).",
            code=ErrorCode.DEPENDENCY_MISSING, data={"package": "mmdebstrap"},
        )  # fmt: skip
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_name(tarball.stem + ".part.tar")  # mmdebstrap takes its format from the name
    command = ["mmdebstrap", "--format=tar", f"--variant={VARIANT}", f"--include={','.join(PACKAGES)}", SUITE,
               str(partial)]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        partial.unlink(missing_ok=True)
        raise ForgeError(
            "mmdebstrap did not finish within 30 minutes (Debian's package mirror is slow or unreachable).",
            fix="Check that this machine reaches its Debian mirror (`apt-get update`), or pass --base-image.",
            code=ErrorCode.DOCKER_BUILD_FAILED,
        ) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise ForgeError(
            f"mmdebstrap could not make the Debian {SUITE} base image:\n{tail}",
            fix="mmdebstrap needs root (or user namespaces) and Debian's package mirror (`apt-get update` "
            "works?); or pass --base-image with an image the engine has.",
            code=ErrorCode.DOCKER_BUILD_FAILED,
        )
    partial.replace(tarball)
