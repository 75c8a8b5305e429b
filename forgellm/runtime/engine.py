"""The Docker engine Forge talks to: the one ``DOCKER_HOST`` names, else the default socket.

Through the docker SDK (imported here only, lazily), so ``forge --help`` and the local runtime never
load it. Every failure to reach the engine becomes one sentence saying why; the callers turn it into
a ForgeError (``require_engine``) or into the reason ``runtime: auto`` stays local.
"""

from __future__ import annotations

import os
from typing import Any

from forgellm.errors import ErrorCode, ForgeError

ENGINE_INSTALL = (
    "Install Docker (https://docs.docker.com/engine/install/, or `sudo apt-get install docker.io`) and start "
    "it (`sudo systemctl start docker`); a remote engine is named by DOCKER_HOST."
)
TOOLKIT_INSTALL = (
    "Install the NVIDIA Container Toolkit (https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/"
    "latest/install-guide.html: `sudo apt-get install nvidia-container-toolkit`, then "
    "`sudo nvidia-ctk runtime configure --runtime=docker` and restart Docker)."
)


def connect(timeout: float = 10) -> tuple[Any | None, str | None]:
    """(client, None) when an engine answers, else (None, why not)."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        return None, "the `docker` Python package is not installed (`pip install docker`)"
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (DockerException, Exception) as exc:  # requests' connection errors too
        return None, _why_unreachable(exc)
    return client, None


def _why_unreachable(exc: BaseException) -> str:
    """The usual reasons in words: no socket (Docker not running), no permission on it, else the error."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    text = str(exc)
    if "FileNotFoundError" in text or "No such file or directory" in text:
        return f"no Docker engine answers at {host} (the socket does not exist: Docker is not running there)"
    if "PermissionError" in text or "Permission denied" in text:
        return (f"this user may not use the Docker engine at {host} (permission denied: add the user to the "
                "`docker` group, then log in again)")  # fmt: skip
    if "Connection refused" in text:
        return f"no Docker engine answers at {host} (connection refused)"
    return f"no Docker engine answers at {host} ({_short(exc)})"


def engine_problem() -> str | None:
    """Why Forge cannot use a Docker engine here, or None."""
    client, problem = connect()
    if client is not None:
        client.close()
    return problem


def require_engine(purpose: str) -> Any:
    """A connected client, or ForgeError(DOCKER_UNAVAILABLE) saying why and how to fix it."""
    client, problem = connect()
    if client is None:
        raise ForgeError(
            f"{purpose} needs Docker, but {problem}.",
            fix=ENGINE_INSTALL,
            code=ErrorCode.DOCKER_UNAVAILABLE,
        )
    return client


def gpu_passthrough_problem(client: Any) -> str | None:
    """Why the engine cannot pass NVIDIA GPUs into containers, or None: the NVIDIA runtime registered
    with the engine (nvidia-container-toolkit), or CDI devices of vendor nvidia.com."""
    info = _info(client)
    runtimes = info.get("Runtimes") or {}
    if "nvidia" in runtimes:
        return None
    cdi = [str(d) for d in (info.get("DiscoveredDevices") or []) if "nvidia.com" in str(d)]
    if cdi:
        return None
    return "the Docker engine has no NVIDIA runtime (the NVIDIA Container Toolkit is not installed or not configured)"


def image_attrs(client: Any, tag: str) -> dict[str, Any] | None:
    """The engine's record of an image (``docker image inspect``), or None when it has no such image."""
    from docker.errors import ImageNotFound

    try:
        return client.images.get(tag).attrs
    except ImageNotFound:
        return None


def _info(client: Any) -> dict[str, Any]:
    try:
        return client.info()
    except Exception:
        return {}


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("…" if len(text) > 300 else "")
