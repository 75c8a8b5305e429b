"""The SkyPilot task of a project: accelerators from the memory estimate, disk from the model and data
sizes, Forge installed by pip or present in a Forge image, the project as SkyPilot's workdir (data
outside it as file mounts at the same path, so forge.yaml reads unchanged), and `forge train` as the run
command, multi-node through SkyPilot's per-node environment.

The task file holds no secret: their names are kept beside it (`CloudTask.secret_names`) and their
values are handed to SkyPilot in memory at launch (`sky_api.launch`).
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgellm.cloud.gpus import GpuRequest, Sizing, size_accelerators
from forgellm.config.schema import ForgeConfig
from forgellm.errors import ErrorCode, ForgeError
from forgellm.project.layout import ProjectLayout

PROVIDERS = ("runpod", "lambda", "aws", "gcp", "azure", "kubernetes")
GB = 1000**3
# What a cloud machine's disk holds besides the model and data: OS, CUDA, Python packages or the image.
BASE_DISK_GB = 60
MIN_DISK_GB = 100
OPTIMIZER_BYTES_PER_PARAM = 12  # full fine-tuning checkpoints: AdamW moments + fp32 master (hardware/memory.py)
# The project's outputs and Forge's own state stay home: not uploaded to the cloud machine.
SKYIGNORE = "runs/\nexports/\n.forge/\n"
REMOTE_WORKDIR = "~/sky_workdir"  # where SkyPilot puts the workdir on every node
_CLUSTER_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,33}[a-z0-9])?$")


@dataclass(frozen=True)
class CloudTask:
    name: str
    provider: str | None
    sizing: Sizing
    disk_gb: int
    image: str | None
    config: dict[str, Any]  # the SkyPilot task YAML, without secret values
    path: Path
    secret_names: tuple[str, ...] = ()
    file_mounts: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        sizing = self.sizing
        return {
            "name": self.name, "provider": self.provider or "cheapest enabled", "accelerators": sizing.accelerators,
            "nodes": sizing.nodes, "strategy": sizing.strategy, "per_gpu_bytes": sizing.per_gpu_bytes,
            "gpu_bytes": sizing.gpu_bytes, "why": sizing.reason, "chosen_by": sizing.chosen_by,
            "disk_gb": self.disk_gb, "install": f"image {self.image}" if self.image else "pip",
            "run": self.config["run"], "secrets": list(self.secret_names), "task_file": str(self.path),
        }  # fmt: skip


def cluster_name(layout: ProjectLayout, name: str | None) -> str:
    """`--name`, else forge-<project folder>: SkyPilot's cluster-name rule (lower case, digits, hyphens)."""
    if name is not None:
        if not _CLUSTER_NAME.match(name):
            raise ForgeError(
                f"--name '{name}' is not a cloud machine name.",
                fix="Use lower-case letters, digits and hyphens, starting with a letter (at most 35 characters).",
                code=ErrorCode.USAGE_INVALID,
                data={"name": name},
            )
        return name
    stem = re.sub(r"[^a-z0-9]+", "-", layout.root.name.lower()).strip("-")
    return ("forge-" + stem)[:35].rstrip("-") or "forge"


def check_provider(provider: str | None) -> None:
    if provider is not None and provider not in PROVIDERS:
        raise ForgeError(
            f"Unknown provider '{provider}'.",
            fix=f"Use one of: {', '.join(PROVIDERS)} (or leave --provider out for the cheapest enabled one).",
            code=ErrorCode.USAGE_INVALID,
            data={"provider": provider},
        )


def _folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _data_paths(layout: ProjectLayout, config: ForgeConfig) -> list[Path]:
    """The data files and folders forge.yaml names (hub sources are downloaded on the machine)."""
    named = [config.data.source] + [s.path for s in config.data.sources]
    paths = [layout.root / p if not Path(p).is_absolute() else Path(p) for p in named if p and ":" not in p[:3]]
    return [p.resolve() for p in paths if p.exists()]


def outside_mounts(layout: ProjectLayout, config: ForgeConfig) -> dict[str, str]:
    """Data outside the project folder, mounted at the same absolute path on the machine."""
    root = layout.root.resolve()
    return {str(p): str(p) for p in _data_paths(layout, config) if not p.is_relative_to(root)}


def disk_gb(params: int, trainable: int, method: str, keep: int, data_bytes: int) -> int:
    """The base, the model (download + merged export, bf16), the checkpoints kept (+ best), the data twice
    (input and prepared), rounded up to 10 GB."""
    model = params * 2
    per_checkpoint = params * (2 + OPTIMIZER_BYTES_PER_PARAM) if method == "full" else trainable * 16
    total = BASE_DISK_GB * GB + 2 * model + (keep + 1) * per_checkpoint + 2 * data_bytes
    return max(MIN_DISK_GB, math.ceil(total / GB / 10) * 10)


def run_command(gpus: int, nodes: int) -> str:
    """Every node prepares its own copy of the data, then trains; with several nodes, rank and main address
    come from SkyPilot's environment (the first of SKYPILOT_NODE_IPS is the head node)."""
    train = f"forge train --gpus {gpus}"
    if nodes > 1:
        train += (
            f' --nodes {nodes} --node-rank "$SKYPILOT_NODE_RANK"'
            ' --main-address "$(echo "$SKYPILOT_NODE_IPS" | head -n1)"'
        )
    return f"set -e\nforge prepare\n{train}\n"


def build_task(
    layout: ProjectLayout,
    config: ForgeConfig,
    *,
    provider: str | None,
    gpu: GpuRequest | None,
    name: str | None = None,
    nodes: int | None = None,
    image: str | None = None,
    secret_names: tuple[str, ...] = (),
    offered: Mapping[str, tuple[int, ...]] | None = None,
) -> CloudTask:
    """The task as a mapping SkyPilot parses, sized from the project's model and training settings."""
    from forgellm import __version__
    from forgellm.hardware.memory import count_params, lora_trainable_params
    from forgellm.planning.candidates import resolve_target

    check_provider(provider)
    cluster = cluster_name(layout, name)
    nodes = nodes or config.training.nodes
    target = resolve_target(config.model.ref)
    seq_len = min(config.model.max_length, target.context_length)
    sizing = size_accelerators(target.dims, config.training, seq_len=seq_len, request=gpu, nodes=nodes, offered=offered)
    params = count_params(target.dims)[0]
    targets = config.training.lora.target_modules
    trainable = lora_trainable_params(
        target.dims, config.training.lora.r, targets if isinstance(targets, str) else "all-linear"
    )
    data_bytes = sum(_folder_bytes(p) for p in _data_paths(layout, config))
    disk = disk_gb(params, trainable, config.training.method, config.training.keep_checkpoints, data_bytes)

    resources: dict[str, Any] = {"accelerators": sizing.accelerators, "disk_size": disk}
    if provider:
        resources["cloud"] = provider
    if image:
        resources["image_id"] = f"docker:{image}"
    mounts = outside_mounts(layout, config)
    task: dict[str, Any] = {
        "name": cluster,
        "num_nodes": nodes,
        "resources": resources,
        "workdir": str(layout.root.resolve()),
        "run": run_command(sizing.count, nodes),
    }
    if mounts:
        task["file_mounts"] = mounts
    if not image:  # the same Forge as here, so forge.yaml reads the same
        task["setup"] = f"pip install {shlex.quote(f'forgellm=={__version__}')}\n"
    from forgellm.cloud.state import task_file

    return CloudTask(
        name=cluster, provider=provider, sizing=sizing, disk_gb=disk, image=image, config=task,
        path=task_file(layout, cluster), secret_names=secret_names, file_mounts=mounts,
    )  # fmt: skip


def write_task(task: CloudTask, layout: ProjectLayout) -> Path:
    """The task file (atomic), and the project's .skyignore when it has none, so runs/ and exports/ stay home."""
    import yaml

    from forgellm.files import atomic_write_text

    class _Dumper(yaml.SafeDumper):
        pass

    def _text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:  # shell scripts as readable `|` blocks
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    _Dumper.add_representer(str, _text)
    ignore = layout.root / ".skyignore"
    if not ignore.exists():
        atomic_write_text(ignore, SKYIGNORE)
    atomic_write_text(task.path, yaml.dump(task.config, Dumper=_Dumper, sort_keys=False))
    return task.path
