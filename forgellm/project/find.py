"""Finding the project a command runs in: the nearest folder holding a forge.yaml."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from forgellm.config.io import CONFIG_FILENAME
from forgellm.errors import ErrorCode, ForgeError
from forgellm.project.layout import ProjectLayout

if TYPE_CHECKING:
    from forgellm.config.schema import ForgeConfig


def find_project(start: str | Path = ".") -> Path | None:
    """The nearest folder at or above `start` that holds a forge.yaml."""
    here = Path(start).expanduser().resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_FILENAME).is_file():
            return folder
    return None


def require_project(start: str | Path = ".") -> Path:
    """find_project for the commands that need a project: the folder, or a ForgeError saying how to make one."""
    root = find_project(start)
    if root is None:
        raise ForgeError(
            f"No Forge project ({CONFIG_FILENAME}) in {Path(start).expanduser().resolve()} or above.",
            fix="Run this inside a project or pass --project DIR; to create one, run `forge init` "
            '(or `forge ignite DATA "GOAL"` for every stage at once).',
            code=ErrorCode.PROJECT_NOT_FOUND,
            data={"path": str(Path(start).expanduser().resolve())},
        )
    return root


def load_project(
    start: str | Path = ".", *, environ: Mapping[str, str] | None = None
) -> tuple[ProjectLayout, ForgeConfig]:
    """The project at or above `start` and its forge.yaml, read once: what a command hands its stage."""
    from forgellm.config.io import load_config

    layout = ProjectLayout(require_project(start))
    return layout, load_config(layout.config_file, environ=environ).config


def written_config(layout: ProjectLayout) -> ForgeConfig | None:
    """forge.yaml as the user wrote it (no FORGE_* overrides baked in), or None before there is one:
    what `forge plan` starts from and rewrites."""
    from forgellm.config.io import load_config

    if not layout.config_file.is_file():
        return None
    return load_config(layout.config_file, environ={}).config
