"""The project's records read into page data. Every figure comes from the readers `forge status` uses
(`project_status`, `runs_status`, the run, eval and export records); nothing here decides anew what a
run's state, best checkpoint or next command is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forgellm.project.layout import ProjectLayout, RunLayout
from forgellm.project.record_io import read_object
from forgellm.project.run_record import RunRecord, RunSummary

# How much of a text file (a Modelfile) a page shows; the rest is on disk.
TEXT_LIMIT = 64 * 1024
# The settings of each config section a run page shows beside that section's rationale.
PLAN_FIELDS = {
    "project": ("name", "goal"),
    "model": ("ref", "max_length"),
    "hardware": ("gpu_arch",),
    "data": ("source",),
    "preprocessing": (),
    "training": (
        "method",
        "stage",
        "learning_rate",
        "lr_scheduler",
        "epochs",
        "max_steps",
        "micro_batch_size",
        "gradient_accumulation",
        "precision",
        "packing",
    ),
    "export": ("quantizations",),
}
# What a page without its record says to run.
NO_RUNS_HINT = 'No training runs yet. Start one with `forge train` (or `forge ignite DATA_FILE "GOAL"` from raw data).'


def run_layout(root: Path, run_id: str) -> RunLayout:
    """The run folder of `run_id` (already checked by `security.safe_name`/`inside`)."""
    return ProjectLayout(root).run(run_id)


def _snapshot(run: RunLayout) -> tuple[Any, str | None]:
    """(the run's config snapshot, or None; the problem reading it)."""
    from forgellm.errors import ForgeError

    if not run.config.is_file():
        return None, None
    try:
        return RunRecord.load(run).load_config(), None
    except (ForgeError, OSError, ValueError) as error:
        return None, getattr(error, "message", str(error))


def runs_page(root: Path) -> dict[str, Any]:
    """The runs list: `forge status --json`'s runs (newest first), with each run's method and model from
    its config snapshot, plus who trains now and the next step status suggests."""
    from forgellm.status import project_status

    report = project_status(root)
    runs = []
    for entry in reversed(report.get("runs") or []):
        config, _ = _snapshot(run_layout(root, entry["id"]))
        runs.append(
            {
                **entry,
                "method": config.training.method if config else None,
                "model": config.model.ref if config else None,
            }
        )
    return {
        "runs": runs,
        "training_now": report.get("training_now"),
        "next": report.get("next"),
        "plan": report.get("plan"),
        "project_name": (report.get("project") or {}).get("name") or root.name,
        "empty_hint": NO_RUNS_HINT,
    }


def run_entry(root: Path, run_id: str) -> dict[str, Any] | None:
    """`forge status`'s entry of one run (state, steps, best val loss ...); None when there is no such run."""
    from forgellm.status.stages import runs_status

    return next((entry for entry in runs_status(root, None) if entry["id"] == run_id), None)


def plan_sections(config: Any) -> list[dict[str, Any]]:
    """The plan a run trains with: per section, its main settings and the rationale `forge plan` wrote."""
    sections = []
    for name, fields in PLAN_FIELDS.items():
        section = getattr(config, name, None)
        if section is None:
            continue
        settings = {field: getattr(section, field, None) for field in fields}
        settings = {key: value for key, value in settings.items() if value is not None}
        rationale = getattr(section, "rationale", None)
        if settings or rationale:
            sections.append({"name": name, "settings": settings, "rationale": rationale})
    return sections


def run_page(root: Path, run_id: str) -> dict[str, Any] | None:
    """Everything a run page shows but the live metrics: its status entry, plan, healing changes and
    checkpoints with their validation loss. None when runs/<run_id> is not a run."""
    from forgellm.training.summary import build_summary, by_step, read_metrics

    run = run_layout(root, run_id)
    entry = run_entry(root, run_id)
    if entry is None or not run.folder.is_dir():
        return None
    config, problem = _snapshot(run)
    if config is None and problem is None:  # no snapshot: the project's plan, said so on the page
        from forgellm.config.io import load_config
        from forgellm.errors import ForgeError

        try:
            config = load_config(root).config
            problem = "This run has no config snapshot; the plan shown is the project's forge.yaml."
        except ForgeError as error:
            problem = error.message
    record = RunRecord.load(run)
    summary: RunSummary | None = record.summary
    if summary is None and run.metrics.is_file():  # running or killed: the figures the summary will have
        summary = build_summary(run.folder, "running", None)
    evals = by_step(read_metrics(run.folder), "eval")
    best_step = summary.best_step if summary else None
    checkpoints = [
        {
            "name": checkpoint.path.name,
            "step": checkpoint.step,
            "val_loss": evals.get(checkpoint.step, {}).get("val_loss"),
            "best": checkpoint.step == best_step,
        }
        for checkpoint in record.checkpoints
    ]
    return {
        "run": entry,
        "plan": plan_sections(config) if config is not None else [],
        "plan_problem": problem,
        "summary": summary.to_dict() if summary else None,
        "recoveries": summary.recoveries if summary else [],
        "config_changes": summary.config_changes if summary else {},
        "checkpoints": checkpoints,
        "best_step": best_step,
        "best_dir": record.best is not None,
    }


def run_curves(root: Path, run_ids: list[str]) -> dict[str, dict[str, list[Any]]]:
    """Loss and val loss per step of each run, for comparing runs on one chart. Per step the last record
    counts (a restarted attempt trains steps again), as in the run's summary."""
    from forgellm.training.summary import by_step, read_metrics

    curves: dict[str, dict[str, list[Any]]] = {}
    for run_id in run_ids:
        run = run_layout(root, run_id)
        if not run.spec.is_file():
            continue
        records = read_metrics(run.folder)
        steps, evals = by_step(records, "step"), by_step(records, "eval")
        curves[run_id] = {
            "step": [s for s, r in steps.items() if _is_number(r.get("loss"))],
            "loss": [r["loss"] for r in steps.values() if _is_number(r.get("loss"))],
            "val_step": [s for s, r in evals.items() if _is_number(r.get("val_loss"))],
            "val_loss": [r["val_loss"] for r in evals.values() if _is_number(r.get("val_loss"))],
        }
    return curves


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ------------------------------------------------------------------------------------------------ data, eval, exports


def data_page(root: Path) -> dict[str, Any]:
    """The data study's report (reports/study.json, as `forge study` wrote it) and the prepared data status."""
    from forgellm.status import project_status

    layout = ProjectLayout(root)
    study = read_object(layout.study_json)
    findings = [f for f in (study or {}).get("findings") or [] if isinstance(f, dict)]
    columns = [c for c in (study or {}).get("columns") or [] if isinstance(c, dict)]
    report = project_status(root)
    return {
        "study": study,
        "study_damaged": study is None and layout.study_json.exists(),
        "findings": findings,
        "columns": columns,
        "has_html": layout.study_html.is_file(),
        "data": report.get("data"),
        "source": (report.get("plan") or {}).get("data_source"),
    }


def eval_page(root: Path) -> dict[str, Any]:
    """`forge status`'s eval figures (base vs tuned) and the side-by-side answers of reports/eval.json."""
    from forgellm.project.eval_record import EvalRecord
    from forgellm.status.stages import eval_status

    layout = ProjectLayout(root)
    status = eval_status(root)
    record = EvalRecord.load(layout) if status and not status["damaged"] else None
    keys = sorted(set((status or {}).get("base", {})) | set((status or {}).get("tuned", {})))
    verdict = record.summary.get("verdict") if record else None  # {status, message, suggestions}
    if not isinstance(verdict, dict) or not isinstance(verdict.get("message"), str):
        verdict = None
    return {
        "eval": status,
        "figures": [
            {"name": key, "base": status["base"].get(key), "tuned": status["tuned"].get(key)}  # type: ignore[index]
            for key in keys
        ],
        "verdict": verdict,
        "examples": record.examples if record else [],
        "warnings": record.warnings if record else [],
        "checkpoint": record.checkpoint if record else None,
        "has_html": layout.eval_html.is_file(),
    }


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def exports_page(root: Path) -> dict[str, Any]:
    """`forge status`'s exports, each with its files and sizes, its Modelfile's text and the `ollama
    create` command its metadata records."""
    from forgellm.status.stages import exports_status

    exports = []
    for entry in exports_status(root):
        folder = ProjectLayout(root).export(entry["name"]).folder
        files = []
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if path.name.startswith("."):
                continue
            try:
                files.append({"name": path.name + ("/" if path.is_dir() else ""), "bytes": _size(path)})
            except OSError:
                files.append({"name": path.name, "bytes": None})
        modelfile_text = None
        if entry["modelfile"]:
            try:
                modelfile_text = (root / entry["modelfile"]).read_text(encoding="utf-8", errors="replace")[:TEXT_LIMIT]
            except OSError:
                modelfile_text = None
        command = entry["ollama"]["command"]
        if not command and entry["modelfile"]:
            command = f"ollama create {entry['name']} -f {entry['modelfile']}"
        exports.append({**entry, "files": files, "modelfile_text": modelfile_text, "ollama_command": command})
    return {"exports": exports}
