"""What `forge train`, `forge export` and `forge eval` left in a project: runs with their state,
exports with their files and Ollama registration, and the evaluation report."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from forgellm.status.files import iso_mtime, iso_time, number, read_json_or_none, read_record
from forgellm.training.protocol import METRICS, RUN_SPEC, SUMMARY
from forgellm.training.runs import LOCK_FILE, RUNS_DIR, checkpoints

EXPORTS_DIR = "exports"
EVAL_REPORT = Path("reports") / "eval.json"
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def training_now(root: Path) -> dict[str, Any] | None:
    """Who trains in this project right now ({run_id, pid, started_at}), or None. The lock file keeps the
    holder's record after a `kill -9`, so a record alone proves nothing: the lock must still be held."""
    path = root / LOCK_FILE
    record = read_json_or_none(path)
    if not record:  # empty: released normally (the holder truncates it), or never taken
        return None
    pid = record.get("pid")
    held = _flock_held(path)
    if held is None:
        held = isinstance(pid, int) and _pid_alive(pid)
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
    for path in (run_dir / RUN_SPEC, run_dir):
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return 0.0


def _order(run_dir: Path) -> tuple[float, float]:
    try:
        written = (run_dir / RUN_SPEC).stat().st_mtime
    except OSError:
        written = 0.0
    return _started(run_dir), written


def runs_status(root: Path, current_prepared: str | None) -> list[dict[str, Any]]:
    """Every folder under runs/, oldest first, with its state: running, completed, interrupted, failed,
    incomplete (stopped without a summary, e.g. killed) or damaged."""
    folder = root / RUNS_DIR
    if not folder.is_dir():
        return []
    live = training_now(root)
    run_dirs = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_order)
    return [_run_entry(run_dir, live, current_prepared) for run_dir in run_dirs]


def _run_entry(run_dir: Path, live: dict[str, Any] | None, current_prepared: str | None) -> dict[str, Any]:
    problems: list[str] = []
    spec = read_record(run_dir / RUN_SPEC, problems, "run.json")
    summary = read_record(run_dir / SUMMARY, problems, "summary.json")
    running = live is not None and live.get("run_id") == run_dir.name
    found = checkpoints(run_dir)
    entry: dict[str, Any] = {
        "id": run_dir.name,
        "state": "",
        "complete": False,
        "status": summary.get("status") if summary else None,
        "reason": summary.get("reason") if summary else None,
        "message": summary.get("message") if summary else None,
        **{key: None for key in _SUMMARY_KEYS},
        "started_at": iso_time(_started(run_dir)),
        "updated_at": iso_mtime(run_dir / SUMMARY) or iso_mtime(run_dir / METRICS) or iso_mtime(run_dir),
        "last_checkpoint_step": found[-1][0] if found else None,
        "resumable": bool(found) and spec is not None,
        "prepared": Path(str(spec.get("prepared_dir"))).name if spec and spec.get("prepared_dir") else None,
        "on_current_data": None,
        "pid": live.get("pid") if running and live else None,
        "problems": problems,
    }
    if spec is None and not (run_dir / RUN_SPEC).exists():
        problems.append("no run.json: not a run folder, or its start was cut off")
    figures = summary if summary is not None else _progress(run_dir)
    entry.update({key: number(figures.get(key)) for key in _SUMMARY_KEYS})
    if current_prepared is not None and entry["prepared"] is not None:
        entry["on_current_data"] = entry["prepared"] == current_prepared
    entry["state"] = _state(running, spec, summary, run_dir)
    entry["complete"] = entry["state"] == "completed"
    return entry


def _state(running: bool, spec: dict[str, Any] | None, summary: dict[str, Any] | None, run_dir: Path) -> str:
    if running:
        return "running"
    if spec is None or ((run_dir / SUMMARY).exists() and summary is None):
        return "damaged"
    recorded = summary.get("status") if summary else None
    if recorded in ("completed", "interrupted", "failed"):
        return str(recorded)
    return "incomplete"  # no summary: killed (-9), a crashed supervisor, or a machine that went down


def _progress(run_dir: Path) -> dict[str, Any]:
    """Figures of a run without summary.json (running or killed), from its metrics as the summary would
    have them. metrics.jsonl grows by one short line per step, so reading it stays cheap."""
    if not (run_dir / METRICS).is_file():
        return {}
    from forgellm.training.summary import build_summary

    try:
        return build_summary(run_dir, "running", None)
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


# ------------------------------------------------------------------------------------------------ exports


def exports_status(root: Path) -> list[dict[str, Any]]:
    """Published exports (the pipeline builds in a hidden folder and renames it when done), newest first."""
    folder = root / EXPORTS_DIR
    if not folder.is_dir():
        return []
    entries = [_export_entry(root, p) for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(entries, key=lambda e: e["published_at"] or "", reverse=True)


def _export_entry(root: Path, folder: Path) -> dict[str, Any]:
    problems: list[str] = []
    meta = read_record(folder / "metadata.json", problems, "metadata.json")
    if meta is None and not (folder / "metadata.json").exists():
        problems.append("no metadata.json: not a finished Forge export")
    files = meta.get("files") if meta and isinstance(meta.get("files"), dict) else {}
    gguf = files.get("gguf") if isinstance(files.get("gguf"), dict) else {}
    ggufs = []
    for quant, name in gguf.items():
        path = folder / str(name)
        size = path.stat().st_size if path.is_file() else None
        if size is None:
            problems.append(f"{name} is missing")
        ggufs.append({"quant": quant, "file": str(name), "bytes": size})
    modelfile = folder / str(files.get("modelfile") or "Modelfile")
    ollama = meta.get("ollama") if meta and isinstance(meta.get("ollama"), dict) else {}
    performance = meta.get("performance") if meta and isinstance(meta.get("performance"), dict) else {}
    return {
        "name": folder.name,
        "path": str(folder.relative_to(root)),
        "complete": meta is not None,
        "run_id": meta.get("run_id") if meta else None,
        "checkpoint": meta.get("checkpoint") if meta else None,
        "base_model": meta.get("base_model") if meta else None,
        "published_at": (meta.get("published_at") if meta else None) or iso_mtime(folder),
        "gguf": ggufs,
        "modelfile": str(modelfile.relative_to(root)) if modelfile.is_file() else None,
        "merged": (folder / "merged").is_dir(),
        "best_val_loss": number(performance.get("best_val_loss")),
        "ollama": {
            "registered": ollama.get("registered") is True,
            "model": ollama.get("model"),
            "reachable": ollama.get("reachable"),
            "command": ollama.get("command"),
            "error": ollama.get("error"),
        },
        "problems": problems,
    }


# ------------------------------------------------------------------------------------------------ eval


def eval_status(root: Path) -> dict[str, Any] | None:
    """reports/eval.json of `forge eval`: base vs fine-tuned figures. Read field by field, since the
    report may come from another Forge version: unknown keys are ignored, missing ones are null."""
    path = root / EVAL_REPORT
    if not path.exists():
        return None
    report = read_json_or_none(path)
    if report is None:
        return {"run_id": None, "base": {}, "tuned": {}, "evaluated_at": iso_mtime(path), "damaged": True}
    summary = report.get("summary") if isinstance(report.get("summary"), dict) else {}
    sides = {}
    for side in ("base", "tuned"):
        figures = summary.get(side) if isinstance(summary.get(side), dict) else {}
        known = {key: number(figures.get(key)) for key in _EVAL_KEYS}
        others = {k: v for k, v in figures.items() if k not in known and number(v) is not None}
        sides[side] = {**known, **others}
    return {
        "run_id": report.get("run_id") if isinstance(report.get("run_id"), str) else None,
        **sides,
        "evaluated_at": iso_mtime(path),
        "damaged": False,
    }
