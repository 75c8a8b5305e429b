"""What `forge train`, `forge export` and `forge eval` left in a project: runs with their state,
exports with their files and Ollama registration, and the evaluation report."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from forgellm.project.eval_record import EvalRecord
from forgellm.project.export_record import ExportMetadata, export_folders
from forgellm.project.layout import ExportLayout, ProjectLayout, RunLayout
from forgellm.project.lock import pid_alive
from forgellm.project.record_io import read_object
from forgellm.project.run_record import RunSpec, RunSummary, list_checkpoints
from forgellm.status.files import iso_mtime, iso_time, note_damaged, number

_SUMMARY_KEYS = ("steps", "total_steps", "best_val_loss", "best_step", "final_train_loss", "duration_s")
_EVAL_KEYS = ("loss", "perplexity", "stop_rate")


# ------------------------------------------------------------------------------------------------ lock


def _flock_held(path: Path) -> bool | None:
    """Whether some process holds a flock on `path`, from the kernel's own table (Linux); None elsewhere.
    Read-only on purpose: trying the lock ourselves could make a `forge train` starting at that instant
    fail. Matched by inode only: overlay filesystems report another device number than stat() does."""
    try:
        inode = str(path.stat().st_ino)
        table = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 00:2d:1234 0 EOF"; waiting requests carry a "->" marker.
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == inode:
            return True
    return False


def training_now(root: Path) -> dict[str, Any] | None:
    """Who trains in this project right now ({run_id, pid, started_at}), or None. The lock file keeps the
    holder's record after a `kill -9`, so a record alone proves nothing: the lock must still be held."""
    path = ProjectLayout(root).project_lock
    record = read_object(path)  # the lock's holder record (see project.lock.ProjectLock)
    if not record or record.get("command", "train") != "train":  # released, never taken, or not training
        return None
    pid = record.get("pid")
    held = _flock_held(path)
    if held is None:
        held = isinstance(pid, int) and pid_alive(pid)
    if not held:
        return None
    return {"run_id": record.get("run_id"), "pid": pid, "started_at": iso_time(record.get("started"))}


# ------------------------------------------------------------------------------------------------ runs


def _started(run_dir: Path) -> float:
    """The run's start: its id begins with the time to the second; else when its folder appeared."""
    try:
        return datetime.strptime(run_dir.name[:15], "%Y%m%d-%H%M%S").timestamp()
    except ValueError:
        pass
    for path in (RunLayout(run_dir).spec, run_dir):
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return 0.0


def _order(run_dir: Path) -> tuple[float, float]:
    try:
        written = RunLayout(run_dir).spec.stat().st_mtime
    except OSError:
        written = 0.0
    return _started(run_dir), written


def runs_status(root: Path, current_prepared: str | None) -> list[dict[str, Any]]:
    """Every folder under runs/, oldest first, with its state: running, completed, interrupted, failed,
    incomplete (stopped without a summary, e.g. killed) or damaged."""
    folder = ProjectLayout(root).runs_dir
    if not folder.is_dir():
        return []
    live = training_now(root)
    run_dirs = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_order)
    return [_run_entry(RunLayout(run_dir), live, current_prepared) for run_dir in run_dirs]


def _run_entry(run: RunLayout, live: dict[str, Any] | None, current_prepared: str | None) -> dict[str, Any]:
    problems: list[str] = []
    spec = note_damaged(run.spec, RunSpec.read(run), problems)
    summary = note_damaged(run.summary, RunSummary.load(run), problems)
    running = live is not None and live.get("run_id") == run.run_id
    found = list_checkpoints(run)
    entry: dict[str, Any] = {
        "id": run.run_id,
        "state": "",
        "complete": False,
        "status": summary.status if summary else None,
        "reason": summary.reason if summary else None,
        "message": summary.message if summary else None,
        **{key: None for key in _SUMMARY_KEYS},
        "started_at": iso_time(_started(run.folder)),
        "updated_at": iso_mtime(run.summary) or iso_mtime(run.metrics) or iso_mtime(run.folder),
        "last_checkpoint_step": found[-1].step if found else None,
        "resumable": bool(found) and spec is not None,
        "prepared": Path(spec.prepared_dir).name if spec and spec.prepared_dir else None,
        "on_current_data": None,
        "pid": live.get("pid") if running and live else None,
        "problems": problems,
    }
    if spec is None and not run.spec.exists():
        problems.append(f"no {run.spec.name}: not a run folder, or its start was cut off")
    figures = summary if summary is not None else _progress(run)
    if figures is not None:
        entry.update({key: number(getattr(figures, key)) for key in _SUMMARY_KEYS})
    if current_prepared is not None and entry["prepared"] is not None:
        entry["on_current_data"] = entry["prepared"] == current_prepared
    entry["state"] = _state(running, spec, summary, run)
    entry["complete"] = entry["state"] == "completed"
    return entry


def _state(running: bool, spec: RunSpec | None, summary: RunSummary | None, run: RunLayout) -> str:
    if running:
        return "running"
    if spec is None or (run.summary.exists() and summary is None):
        return "damaged"
    recorded = summary.status if summary else None
    if recorded in ("completed", "interrupted", "failed"):
        return str(recorded)
    return "incomplete"  # no summary: killed (-9), a crashed supervisor, or a machine that went down


def _progress(run: RunLayout) -> RunSummary | None:
    """Figures of a run without summary.json (running or killed), from its metrics as the summary would
    have them. metrics.jsonl grows by one short line per step, so reading it stays cheap."""
    if not run.metrics.is_file():
        return None
    from forgellm.training.summary import build_summary

    try:
        return build_summary(run.folder, "running", None)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


# ------------------------------------------------------------------------------------------------ exports


def exports_status(root: Path) -> list[dict[str, Any]]:
    """Published exports (the pipeline builds in a hidden folder and renames it when done), newest first."""
    entries = [_export_entry(root, export) for export in export_folders(ProjectLayout(root))]
    return sorted(entries, key=lambda e: e["published_at"] or "", reverse=True)


def _export_entry(root: Path, export: ExportLayout) -> dict[str, Any]:
    problems: list[str] = []
    meta = note_damaged(export.metadata, ExportMetadata.load(export), problems)
    if meta is None and not export.metadata.exists():
        problems.append(f"no {export.metadata.name}: not a finished Forge export")
    ggufs = []
    for quant, name in (meta.files.gguf if meta else {}).items():
        path = export.folder / name
        size = path.stat().st_size if path.is_file() else None
        if size is None:
            problems.append(f"{name} is missing")
        ggufs.append({"quant": quant, "file": name, "bytes": size})
    modelfile = export.folder / (meta.files.modelfile if meta and meta.files.modelfile else export.modelfile.name)
    ollama = meta.ollama if meta else None
    return {
        "name": export.name,
        "path": str(export.folder.relative_to(root)),
        "complete": meta is not None,
        "run_id": meta.run_id if meta else None,
        "checkpoint": meta.checkpoint if meta else None,
        "base_model": meta.base_model if meta else None,
        "published_at": (meta.published_at if meta else None) or iso_mtime(export.folder),
        "gguf": ggufs,
        "modelfile": str(modelfile.relative_to(root)) if modelfile.is_file() else None,
        "merged": export.merged.is_dir(),
        "best_val_loss": number(meta.performance.get("best_val_loss")) if meta else None,
        "ollama": {
            "registered": bool(ollama and ollama.registered),
            "model": ollama.model if ollama else None,
            "reachable": ollama.reachable if ollama else None,
            "command": ollama.command if ollama else None,
            "error": ollama.error if ollama else None,
        },
        "problems": problems,
    }


# ------------------------------------------------------------------------------------------------ eval


def eval_status(root: Path) -> dict[str, Any] | None:
    """reports/eval.json of `forge eval`: base vs fine-tuned figures. The record reads it field by field,
    since the report may come from another Forge version: unknown keys are ignored, missing ones are null."""
    path = ProjectLayout(root).eval_json
    if not path.exists():
        return None
    report = EvalRecord.load(path)
    if report is None:
        return {"run_id": None, "base": {}, "tuned": {}, "evaluated_at": iso_mtime(path), "damaged": True}
    return {
        "run_id": report.run_id,
        **{side: report.figures(side, _EVAL_KEYS) for side in ("base", "tuned")},
        "evaluated_at": iso_mtime(path),
        "damaged": False,
    }
