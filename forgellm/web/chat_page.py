"""The chat playground page (/chat): talk to the models of a `ModelHost` through the OpenAI-compatible API
(forgellm/web/openai_api.py) from the browser, one model or two side by side. The page is a template and
plain JavaScript (static/chat.js); every answer streams from /v1/chat/completions or /v1/completions."""

# No `from __future__ import annotations`: FastAPI reads the route's `Request` annotation at run time, and
# that class is imported inside chat_router (fastapi stays unimported until a server starts).
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forgellm.web.models import ModelHost


def project_name(project_dir: Path | None) -> str:
    """forge.yaml's project name, else the folder's name ('' outside a project)."""
    if project_dir is None:
        return ""
    from forgellm.config.io import load_config
    from forgellm.errors import ForgeError

    try:
        return load_config(project_dir).config.project.name
    except ForgeError:  # a damaged forge.yaml: the dashboard says so elsewhere; the page still works
        return project_dir.name


def chat_router(host: "ModelHost", project_dir: Path | None) -> Any:
    """GET /chat over `host`'s models (the page reads /v1/models, so the API router must be served too)."""
    from fastapi import APIRouter, Request
    from fastapi.responses import HTMLResponse

    from forgellm.web.app import templates

    router = APIRouter()
    name = project_name(project_dir)

    @router.get("/chat", response_class=HTMLResponse)
    async def chat(request: Request) -> Any:
        context = {
            "page": "chat",
            "project_name": name,
            "project_dir": str(project_dir) if project_dir else "",
            "single": len(host.entries) == 1,
        }
        return templates().TemplateResponse(request, "chat.html", context)

    return router
