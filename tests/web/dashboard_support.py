"""Project folders with runs, a study, an eval and an export written as the stages write them, and the
dashboard app over them on a real server, for the dashboard's tests."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from forgellm.config.io import load_config, save_config
from forgellm.project import init_project
from forgellm.project.run_record import RunSpec
from forgellm.web.app import create_app
from forgellm.web.dashboard import dashboard_router
from forgellm.web.security import access_for
from web.support import serving


def project(tmp_path: Path, name: str = "bot") -> Path:
    """A planned project (forge.yaml with a training rationale), no runs yet."""
    root = tmp_path / name
    init_project(root)
    config = load_config(root).config
    config.data.source = "support.csv"
    config.training.rationale = "Sized for 2 CPU cores: LoRA r=8, 40 steps."
    config.training.max_steps = 40
    save_config(config, root / "forge.yaml")
    return root


def step_line(step: int, *, loss: float | None = None, attempt: int = 1) -> dict[str, Any]:
    return {
        "event": "step", "step": step, "loss": loss if loss is not None else 2.0 - step / 50, "lr": 1e-3,
        "tokens_per_s": 900.0 + step, "memory_bytes": (200 + step) * 1024 * 1024, "attempt": attempt,
        "time": 1000.0 + step,
    }  # fmt: skip


def eval_line(step: int, val_loss: float) -> dict[str, Any]:
    return {"event": "eval", "step": step, "val_loss": val_loss, "best_val_loss": val_loss, "improved": True,
            "attempt": 1, "time": 1000.0 + step}  # fmt: skip


def write_lines(path: Path, records: list[dict[str, Any]], raw_tail: str = "") -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in records) + raw_tail)


def run(
    root: Path,
    run_id: str,
    *,
    steps: int = 10,
    status: str | None = "completed",
    checkpoints: tuple[int, ...] = (5, 10),
    evals: dict[int, float] | None = None,
    extra: list[dict[str, Any]] | None = None,
) -> Path:
    """runs/<id>/ as `forge train` leaves it: run.json, the config snapshot, metrics.jsonl, checkpoints,
    and summary.json when `status` is given (None: running or killed)."""
    folder = root / "runs" / run_id
    (folder / "logs").mkdir(parents=True)
    RunSpec(run_id, str(root), str(root / "data" / "prepared" / "abc"), "/models/tiny", "tiny").save(folder)
    save_config(load_config(root).config, folder / "config.yaml")
    evals = {5: 1.5, 10: 1.3} if evals is None else evals
    lines: list[dict[str, Any]] = [{"event": "start", "step": 0, "total_steps": steps, "attempt": 1, "time": 1000.0}]
    for step in range(1, steps + 1):
        lines.append(step_line(step))
        if step in evals:
            lines.append(eval_line(step, evals[step]))
    write_lines(folder / "metrics.jsonl", lines + (extra or []))
    for step in checkpoints:
        (folder / "checkpoints" / f"step-{step}").mkdir(parents=True)
        (folder / "checkpoints" / f"step-{step}" / "trainer_state.pt").write_bytes(b"state")
    if status is not None:
        from forgellm.training.summary import build_summary

        build_summary(folder, status, "max_steps" if status == "completed" else None, None).save(folder)
    return folder


@contextmanager
def dashboard(root: Path, monkeypatch: Any) -> Iterator[str]:
    monkeypatch.delenv("FORGE_UI_TOKEN", raising=False)
    with serving(create_app(access_for("127.0.0.1"), [dashboard_router(root)])) as url:
        yield url


HOLDER = (
    "import sys, time\nfrom pathlib import Path\nfrom forgellm.project.lock import ProjectLock\n"
    "lock = ProjectLock(Path(sys.argv[1]), 'train'); lock.acquire(sys.argv[2] or None); print('held', flush=True)\n"
    "time.sleep(120)\n"
)


@contextmanager
def lock_held_elsewhere(root: Path, run_id: str = "") -> Iterator[subprocess.Popen]:
    """The project's train lock held by another process, as a `forge train` in a terminal holds it."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), run_id], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "held"
        yield process
    finally:
        process.kill()
        process.wait()


def sse_events(url: str, *, headers: dict[str, str] | None = None, until: Any = None, timeout: float = 20.0):
    """The server-sent events of `url` as (id, event, data) until the stream ends or `until(events)` holds."""
    import time

    import httpx

    events: list[tuple[int | None, str, Any]] = []
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", url, headers=headers or {}, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            assert time.monotonic() < deadline, f"no end after {timeout} s: {events[-3:]}"
            if line.startswith(":") or line.startswith("retry:"):
                continue
            if line:
                key, _, value = line.partition(": ")
                fields[key] = value
                continue
            if "event" in fields:
                event_id = int(fields["id"]) if "id" in fields else None
                events.append((event_id, fields["event"], json.loads(fields["data"])))
                if until is not None and until(events):
                    return events
            fields = {}
    return events
