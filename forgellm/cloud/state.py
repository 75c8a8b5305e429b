"""`.forge/cloud/state.json`: the cloud machine launched from this project, so status/logs/down find it.

One writer (`forge cloud launch`), read by status, logs and down; removed by down."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from forgellm.errors import ErrorCode, ForgeError
from forgellm.files import atomic_write_text, read_json_object
from forgellm.project.layout import ProjectLayout

VERSION = 1


def cloud_dir(layout: ProjectLayout) -> Path:
    return layout.state_dir / "cloud"


def task_file(layout: ProjectLayout, name: str) -> Path:
    return cloud_dir(layout) / f"{name}.yaml"


def _state_file(layout: ProjectLayout) -> Path:
    return cloud_dir(layout) / "state.json"


@dataclass(frozen=True)
class CloudState:
    cluster: str
    provider: str | None
    accelerators: str
    nodes: int
    task_file: str
    launched_at: str
    job_id: int | None = None
    version: int = VERSION

    def save(self, layout: ProjectLayout) -> None:
        atomic_write_text(_state_file(layout), json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, layout: ProjectLayout) -> CloudState:
        path = _state_file(layout)
        if not path.is_file():
            raise ForgeError(
                "No cloud machine was launched from this project.",
                fix="Start one with `forge cloud launch` (add --dry-run to see the task first).",
                code=ErrorCode.CLOUD_NO_CLUSTER,
            )
        data = read_json_object(path)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @staticmethod
    def clear(layout: ProjectLayout) -> None:
        _state_file(layout).unlink(missing_ok=True)
