"""What a Forge container gets: its name, its mounts, its environment. Pure: no engine needed.

Paths inside the container are the host's paths (every mount is at the same absolute path), so every
path Forge records — run.json, metrics, checkpoints, manifests — stays valid on both sides. What is
mounted: the project read-write; the model caches (Forge's, Hugging Face's) read-write, so a model
downloaded or converted inside stays for later runs; input data and a local model folder read-only.
Never FORGE_HOME itself: it holds the credentials file. API keys travel as the container's environment
only while they are set on the host: never in an image, never in a file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from forgellm.config.settings import KEY_ENV_VARS, credentials_path, model_cache_dir
from forgellm.runtime.images import IMAGE_ENV
from forgellm.training.protocol import MEMORY_LIMIT_ENV

# The image to run instead of the one for this machine's GPUs (tests, a custom build).
# Secrets: passed when set, never written anywhere.
KEY_VARS: tuple[str, ...] = (*{v for names in KEY_ENV_VARS.values() for v in names}, "HF_TOKEN")
# Settings of the host's environment the stages read (offline mode, drills, the CPU a test pretends).
_PASSED_PREFIXES = ("FORGE_", "HF_", "TRANSFORMERS_", "TOKENIZERS_")
# Set by the container spec itself, or meaningless inside: never copied from the host.
_NOT_PASSED = {"FORGE_HOME", "FORGE_CACHE_DIR", "HF_HOME", MEMORY_LIMIT_ENV, IMAGE_ENV}
# FORGE_HOME inside: an empty folder of the container, so no credentials file is ever read there.
CONTAINER_HOME = "/tmp/forge-home"
_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_.-]+")


@dataclass(frozen=True)
class Mount:
    path: Path  # the same path on the host and in the container
    writable: bool

    def volume(self) -> tuple[str, dict[str, str]]:
        """The docker SDK's ``volumes`` entry."""
        return str(self.path), {"bind": str(self.path), "mode": "rw" if self.writable else "ro"}


@dataclass
class ContainerSpec:
    image: str
    name: str
    command: list[str]
    working_dir: Path
    mounts: list[Mount] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    user: str = ""
    gpus: bool = False
    memory_limit: int | None = None
    tty: bool = False

    def create_kwargs(self) -> dict[str, object]:
        """Keyword arguments of ``client.containers.create``."""
        kwargs: dict[str, object] = {
            "image": self.image,
            "command": self.command,
            "name": self.name,
            "working_dir": str(self.working_dir),
            "volumes": dict(m.volume() for m in self.mounts),
            "environment": self.environment,
            "user": self.user or None,
            "init": True,  # tini as PID 1: forwards SIGINT to the stage and reaps data-loader children
            "tty": self.tty,
            "detach": True,
        }
        if self.gpus:
            from docker.types import DeviceRequest

            kwargs["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        if self.memory_limit is not None:  # the drill's limit becomes a real cgroup limit, swap included
            kwargs["mem_limit"] = self.memory_limit
            kwargs["memswap_limit"] = self.memory_limit
        return kwargs


def container_name(*parts: str) -> str:
    """``forge-<parts>`` within Docker's rules for names ([a-zA-Z0-9][a-zA-Z0-9_.-]*), at most 128 chars."""
    text = "-".join(["forge", *parts])
    return _NAME_CHARS.sub("-", text).strip("-.")[:128]


def host_user() -> str:
    """uid:gid of this process: files the container writes belong to the user on the host."""
    return f"{os.getuid()}:{os.getgid()}" if hasattr(os, "getuid") else ""


def cache_dirs() -> list[Path]:
    """Forge's model cache and the Hugging Face cache, created so what the container adds stays."""
    hf_home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser()
    folders = []
    for folder in (model_cache_dir(), hf_home):
        folder = folder.resolve()
        folder.mkdir(parents=True, exist_ok=True)
        folders.append(folder)
    return folders


def plan_mounts(project_dir: Path, read_only: list[Path] = (), writable: list[Path] = ()) -> list[Mount]:  # type: ignore[assignment]
    """The project and ``writable`` read-write, ``read_only`` read-only; a path inside another mount is
    covered by it; a folder holding Forge's credentials file is never mounted."""
    secret = credentials_path().expanduser().resolve()
    wanted = [(Path(project_dir), True), *((Path(p), True) for p in writable), *((Path(p), False) for p in read_only)]
    mounts: list[Mount] = []
    for path, rw in wanted:
        path = path.expanduser().resolve()
        if not path.exists() or _inside(secret, path):  # FORGE_HOME itself (or above it) is never mounted
            continue
        if any(_inside(path, m.path) and (m.writable or not rw) for m in mounts):
            continue
        mounts = [m for m in mounts if not (_inside(m.path, path) and (rw or not m.writable))]
        mounts.append(Mount(path, rw))
    return mounts


def local_model(ref: str, project_dir: Path) -> list[Path]:
    """A model named by a local path (not a catalog alias or hub id): the folder to mount read-only."""
    path = Path(ref).expanduser()
    path = path if path.is_absolute() else Path(project_dir) / path
    return [path.resolve()] if path.exists() else []


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def environment(extra: dict[str, str] | None = None, source: dict[str, str] | None = None) -> dict[str, str]:
    """The container's environment: the host's Forge/HF settings, the keys that are set, the caches'
    paths, a FORGE_HOME of the container's own."""
    source = dict(os.environ if source is None else source)
    env = {
        k: v for k, v in source.items() if k.startswith(_PASSED_PREFIXES) and k not in _NOT_PASSED and k not in KEY_VARS
    }
    env.update({k: source[k] for k in KEY_VARS if source.get(k)})
    hf_home = source.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    env.update(
        {
            "FORGE_HOME": CONTAINER_HOME,
            "FORGE_CACHE_DIR": str(model_cache_dir().expanduser().resolve()),
            "HF_HOME": str(Path(hf_home).expanduser().resolve()),
            "HOME": "/tmp",  # the host's uid has no home in the image
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def path_settings(env: dict[str, str]) -> list[Path]:
    """Files the passed Forge settings name (e.g. FORGE_CPUINFO): mounted read-only so they resolve."""
    return [
        Path(v) for k, v in env.items() if k.startswith("FORGE_") and k not in KEY_VARS and os.path.isabs(v)
        and os.path.isfile(v)
    ]  # fmt: skip
