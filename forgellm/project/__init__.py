"""The project folder: its layout (every path named once), the typed records stages hand each other,
creating it (`forge init`) and finding it. `forge status` (forgellm.status) reads it; nothing here
imports status."""

from forgellm.project.find import find_project, load_project, require_project, written_config
from forgellm.project.init import (
    DEFAULT_ADVISOR_MODELS,
    DEFAULT_OPENAI_BASE_URL,
    GITIGNORE_LINES,
    PROJECT_DIRS,
    InitResult,
    advisor_settings,
    init_project,
)
from forgellm.project.layout import ExportLayout, PreparedLayout, ProjectLayout, RunLayout

__all__ = [
    "DEFAULT_ADVISOR_MODELS",
    "DEFAULT_OPENAI_BASE_URL",
    "GITIGNORE_LINES",
    "PROJECT_DIRS",
    "ExportLayout",
    "InitResult",
    "PreparedLayout",
    "ProjectLayout",
    "RunLayout",
    "advisor_settings",
    "find_project",
    "init_project",
    "load_project",
    "require_project",
    "written_config",
]
