"""Finding the project a command runs in: the nearest folder holding a forge.yaml."""

from __future__ import annotations

from pathlib import Path

from forgellm.config.io import CONFIG_FILENAME
from forgellm.errors import ErrorCode, ForgeError


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
