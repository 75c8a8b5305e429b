"""Stages take (layout, config) loaded once by their caller; tests build both from a project folder."""

from __future__ import annotations

from pathlib import Path

from forgellm.config.io import load_config
from forgellm.config.schema import ForgeConfig
from forgellm.project import ProjectLayout, written_config


def staged(root: str | Path) -> tuple[ProjectLayout, ForgeConfig]:
    """(layout, config) of the project at `root`, forge.yaml read now, as a command does."""
    root = Path(root).resolve()
    return ProjectLayout(root), load_config(root).config


def planned(root: str | Path) -> tuple[ProjectLayout, ForgeConfig | None]:
    """(layout, forge.yaml as written or None) for make_plan, as `forge plan` does."""
    layout = ProjectLayout(Path(root).expanduser().resolve())
    return layout, written_config(layout)
