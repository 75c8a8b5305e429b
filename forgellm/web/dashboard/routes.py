"""The dashboard's routes: pages (server-rendered, autoescaped), their JSON, a run's metrics as
server-sent events, the project's HTML reports (sandboxed) and training start/stop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse

from forgellm.errors import ErrorCode, ForgeError
from forgellm.project.layout import ProjectLayout
from forgellm.web.app import templates
from forgellm.web.dashboard import records
from forgellm.web.dashboard.metrics_stream import last_event_id, metrics_events
from forgellm.web.dashboard.training_control import TrainOptions, start_training, stop_training
from forgellm.web.security import inside, safe_name

# A report page of the project (study.html, eval.html) shows the user's data: it is shown in a sandbox
# with no scripts, no requests and no access to the dashboard's origin.
REPORT_HEADERS = {
    "Content-Security-Policy": "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    "X-Content-Type-Options": "nosniff",
}
COMPARE_LIMIT = 12  # runs on one comparison chart


def dashboard_router(project_dir: Path) -> APIRouter:
    """The dashboard of the project in `project_dir` (its root, holding forge.yaml)."""
    root = Path(project_dir).expanduser().resolve()
    layout = ProjectLayout(root)
    router = APIRouter()

    def page(request: Request, name: str, which: str, **context: Any) -> HTMLResponse:
        shell = {"page": which, "project_name": root.name, "project_dir": str(root)}
        return templates().TemplateResponse(request, name, {**shell, **context})

    def run_id_of(run_id: str) -> str:
        """A run id from the URL naming a folder under runs/ (else 404)."""
        folder = inside(layout.runs_dir, safe_name(run_id, "run"))
        if not folder.is_dir():
            raise HTTPException(status_code=404, detail=f"No run named {run_id!r} in this project.")
        return run_id

    # ------------------------------------------------------------------------------------------ runs

    @router.get("/", response_class=HTMLResponse)
    def runs_page(request: Request) -> HTMLResponse:
        data = records.runs_page(root)
        return page(request, "runs.html", "runs", **data)

    @router.get("/api/runs")
    def runs_json() -> dict[str, Any]:
        return records.runs_page(root)

    @router.get("/api/curves")
    def curves(run: Annotated[list[str] | None, Query()] = None) -> dict[str, Any]:
        ids = [run_id_of(run_id) for run_id in (run or [])[:COMPARE_LIMIT]]
        return {"runs": records.run_curves(root, ids)}

    @router.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(request: Request, run_id: str) -> HTMLResponse:
        data = records.run_page(root, run_id_of(run_id))
        if data is None:
            raise HTTPException(status_code=404, detail=f"No run named {run_id!r} in this project.")
        return page(request, "run.html", "runs", **data)

    @router.get("/api/runs/{run_id}")
    def run_json(run_id: str) -> dict[str, Any]:
        data = records.run_page(root, run_id_of(run_id))
        if data is None:
            raise HTTPException(status_code=404, detail=f"No run named {run_id!r} in this project.")
        return data

    @router.get("/runs/{run_id}/events")
    async def run_events(request: Request, run_id: str) -> StreamingResponse:
        run_id = run_id_of(run_id)
        after = last_event_id(request.headers.get("last-event-id"))

        def live() -> bool:
            from forgellm.status.stages import training_now

            now = training_now(root)
            # run_id None: a `forge train` that has not named its run yet (it may be this one)
            return now is not None and now.get("run_id") in (run_id, None)

        stream = metrics_events(records.run_layout(root, run_id).metrics, after, live)
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # ------------------------------------------------------------------------------------------ data, eval, exports

    @router.get("/data", response_class=HTMLResponse)
    def data_page(request: Request) -> HTMLResponse:
        return page(request, "data.html", "data", **records.data_page(root))

    @router.get("/eval", response_class=HTMLResponse)
    def eval_page(request: Request) -> HTMLResponse:
        return page(request, "evaluation.html", "eval", **records.eval_page(root))

    @router.get("/exports", response_class=HTMLResponse)
    def exports_page(request: Request) -> HTMLResponse:
        return page(request, "exports.html", "exports", **records.exports_page(root))

    @router.get("/reports/{name}")
    def report_file(name: str) -> FileResponse:
        if name not in (layout.study_html.name, layout.eval_html.name):
            raise HTTPException(status_code=404, detail=f"No report named {name[:80]!r}.")
        path = inside(layout.reports_dir, name)
        if not path.is_file():
            raise HTTPException(status_code=404, detail=f"No report named {name!r} yet.")
        return FileResponse(path, media_type="text/html; charset=utf-8", headers=REPORT_HEADERS)

    # ------------------------------------------------------------------------------------------ training

    @router.post("/api/train")
    async def train_start(request: Request) -> dict[str, Any]:
        import asyncio

        options = _train_options(await _json_body(request))
        return await asyncio.to_thread(start_training, root, options)

    @router.post("/api/train/stop")
    async def train_stop(request: Request) -> dict[str, Any]:
        import asyncio

        await _json_body(request)
        return await asyncio.to_thread(stop_training, root)

    return router


async def _json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object. Only JSON: a cross-site form cannot send it (see web.security)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise HTTPException(status_code=415, detail="Send a JSON body (Content-Type: application/json).")
    try:
        body = await request.json()
    except ValueError:
        raise HTTPException(status_code=400, detail="The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise HTTPException(status_code=400, detail="The body must be a JSON object.")
    return body


def _train_options(body: dict[str, Any]) -> TrainOptions:
    resume, run_id, max_steps = body.get("resume", False), body.get("run_id"), body.get("max_steps")
    unknown = set(body) - {"resume", "run_id", "max_steps"}
    problem = None
    if unknown:
        problem = f"unknown option(s) {', '.join(sorted(unknown))}"
    elif not isinstance(resume, bool):
        problem = "resume must be true or false"
    elif run_id is not None and (not isinstance(run_id, str) or not resume):
        problem = "run_id is a run's id, and only with resume"
    elif max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        problem = "max_steps must be a whole number of 1 or more"
    if problem:
        raise ForgeError(
            f"Cannot start training: {problem}.",
            fix='Send e.g. {"resume": true, "run_id": "RUN", "max_steps": 100}.',
            code=ErrorCode.USAGE_INVALID,
        )
    if run_id is not None:
        safe_name(run_id, "run")
    return TrainOptions(resume=resume, run_id=run_id, max_steps=max_steps)
