"""The FastAPI app of `forge ui` and `forge serve`: the guard, the shared page shell and static files,
errors as JSON, and the routers each command adds (the dashboard's pages, the OpenAI-compatible API)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from forgellm import __version__
from forgellm.errors import ErrorCode, ForgeError
from forgellm.web.security import Access, Guard

WEB_DIR = Path(__file__).parent
# HTTP status of the ForgeErrors a route may raise; any other code is the request's fault (400).
STATUS_OF = {
    ErrorCode.PROJECT_LOCKED: 409,
    ErrorCode.RUN_NOT_FOUND: 404,
    ErrorCode.NO_TRAINING_RUN: 404,
    ErrorCode.EXPORT_MISSING: 404,
    ErrorCode.PROJECT_NOT_FOUND: 404,
    ErrorCode.MODEL_NOT_SERVED: 404,
    ErrorCode.WEB_UNAUTHORIZED: 401,
    ErrorCode.DEPENDENCY_MISSING: 503,
    ErrorCode.MEMORY_INSUFFICIENT: 503,
    ErrorCode.MODEL_LOAD_FAILED: 503,
}


def error_body(error: ForgeError) -> dict[str, Any]:
    """A ForgeError as the OpenAI error shape (the official clients show `message`), plus its fix."""
    return {"error": {"message": error.message, "fix": error.fix, "code": error.code.value, "type": "forge_error"}}


@cache
def templates() -> Any:
    """The pages' Jinja2 environment (autoescaped: pages show the user's data, which may hold markup)."""
    from fastapi.templating import Jinja2Templates

    return Jinja2Templates(directory=str(WEB_DIR / "templates"))


def plotly_js() -> Path:
    """plotly.js as the installed plotly package ships it: charts with no download and no vendored copy."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def create_app(access: Access, routers: Sequence[Any] = (), *, title: str = "Forge") -> Any:
    """The app: `routers` (FastAPI APIRouters) behind `Guard`, plus /health and /static."""
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    # No /docs, /redoc or /openapi.json: their pages load scripts from a CDN, and the API is OpenAI's.
    app = FastAPI(title=title, version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, access=access)

    @app.exception_handler(ForgeError)
    async def forge_error(request: Request, error: ForgeError) -> JSONResponse:
        return JSONResponse(error_body(error), status_code=STATUS_OF.get(error.code, 400))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get("/static/plotly.min.js", include_in_schema=False)
    async def plotly() -> FileResponse:
        return FileResponse(plotly_js(), media_type="text/javascript")

    app.mount("/static", StaticFiles(directory=str(WEB_DIR / "static")), name="static")
    for router in routers:
        app.include_router(router)
    return app
