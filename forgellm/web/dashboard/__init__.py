"""The pages of `forge ui`: runs, a run's live metrics, the data study, the evaluation and the exports,
and starting or stopping training. `dashboard_router(project_dir)` is what the CLI mounts."""

from __future__ import annotations

from forgellm.web.dashboard.routes import dashboard_router

__all__ = ["dashboard_router"]
