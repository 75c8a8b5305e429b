"""Forge's CPU image for the runtime tests, built by Forge from the project's Dockerfile exactly as
`forge docker build --arch cpu --local-base --wheels DIR` does, on the session's private engine:

- the base: Debian bookworm made with mmdebstrap and ``docker import`` (no registry), its tarball cached
  under ~/.cache/forge-tests/docker by what goes into it, so later sessions import it in seconds;
- the wheels: ``pip download`` from this machine's package index (its pip configuration), cached there by
  the exact pins and requirements; llama-cpp-python's wheel comes from pip's cache, where `make test`'s
  own install left the wheel it compiled (no compiler is needed in the image then).

Skipped, with the reason, where any of that cannot be had.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

TEST_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "forge-tests" / "docker"
BUILT: dict[str, object] = {}  # what the session's build took, for the tests that report it


def build_test_image() -> str:
    from forgellm.runtime import context
    from forgellm.runtime.base import CACHE_ENV
    from forgellm.runtime.build import build_image
    from forgellm.runtime.images import ARCHES

    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is not installed (`apt-get install mmdebstrap`): no base image can be made here")
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the image's Python is 3.11; this machine's pip downloads wheels for another Python")
    os.environ.setdefault(CACHE_ENV, str(TEST_CACHE))  # the session's own (FORGE_HOME is per test)
    wheels = wheelhouse(context)
    started = time.monotonic()
    result = build_image(ARCHES["cpu"], local_base=True, wheels=wheels, log_dir=TEST_CACHE / "build-logs")
    BUILT.update(seconds=time.monotonic() - started, result=result, wheels=wheels)
    return "forge:cpu"


def wheelhouse(context) -> Path:
    from forgellm.runtime.images import CPU

    requirements = [f"torch=={_version('torch')}", *context.requirements(CPU),
                    f"llama-cpp-python=={context.llama_cpp_version()}"]  # fmt: skip
    pins = context.constraints()
    key = hashlib.sha256("\n".join(requirements + pins).encode()).hexdigest()[:16]
    target = TEST_CACHE / f"wheels-{key}"
    if target.is_dir():
        return target
    partial = TEST_CACHE / f"wheels-{key}.part"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / "constraints.txt").write_text("\n".join(pins) + "\n")
    pin_file = str(partial / "constraints.txt")
    command = [sys.executable, "-m", "pip", "download", "-q", "-d", str(partial), "-c", pin_file]
    for folder in _built_wheel_folders("llama_cpp_python"):
        command += ["--find-links", str(folder)]
    done = subprocess.run([*command, *requirements], capture_output=True, text=True, timeout=900)
    (partial / "constraints.txt").unlink()
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        pytest.skip(f"pip could not download the image's wheels from this machine's index: {done.stderr[-800:]}")
    if not list(partial.glob("llama_cpp_python-*.whl")):
        shutil.rmtree(partial, ignore_errors=True)
        pytest.skip("no built llama-cpp-python wheel in pip's cache (make install-dev compiles one)")
    partial.rename(target)
    return target


def _built_wheel_folders(name: str) -> list[Path]:
    """Folders of pip's cache holding a wheel pip built locally for ``name``."""
    cache = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True).stdout.strip()
    if not cache:
        return []
    return sorted({path.parent for path in Path(cache, "wheels").rglob(f"{name}-*.whl")})


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name).split("+")[0]
