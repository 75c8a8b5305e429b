"""The end of a run: summary.json (what happened, where the results are) and loss.png, both built
from metrics.jsonl, so a resumed run's summary covers every attempt of every session."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from forgellm.project.layout import RunLayout
from forgellm.project.run_record import RunSummary, latest_checkpoint


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of metrics.jsonl; a line cut off by a crash is skipped."""
    records = []
    try:
        with open(RunLayout(run_dir).metrics, encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
    except OSError:
        pass
    return records


def by_step(records: list[dict[str, Any]], kind: str) -> dict[int, dict[str, Any]]:
    """The last record of a kind per step: after a restart from a checkpoint, steps are trained again
    and the later attempt's values are the ones the model kept."""
    found: dict[int, dict[str, Any]] = {}
    for record in records:
        if record.get("event") == kind and isinstance(record.get("step"), int):
            found[record["step"]] = record
    return dict(sorted(found.items()))


def _duration(records: list[dict[str, Any]]) -> float:
    """Seconds spent in attempts (first to last event of each), leaving out time between sessions."""
    spans: dict[Any, list[float]] = {}
    for record in records:
        if isinstance(record.get("time"), (int, float)):
            spans.setdefault(record.get("attempt"), []).append(record["time"])
    return round(sum(max(times) - min(times) for times in spans.values()), 1)


def _config_changes(recoveries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each setting healing changed: its value before the first change and after the last."""
    changes: dict[str, dict[str, Any]] = {}
    for recovery in recoveries:
        for key, change in (recovery.get("changes") or {}).items():
            changes.setdefault(key, {"from": change.get("from")})["to"] = change.get("to")
    return changes


def _val_results(evals: dict[int, dict[str, Any]], end: dict[str, Any] | None) -> dict[str, Any]:
    losses = {step: e["val_loss"] for step, e in evals.items() if isinstance(e.get("val_loss"), (int, float))}
    best_step = min(losses, key=losses.get) if losses else None
    result = {
        "best_val_loss": losses[best_step] if best_step is not None else None,
        "best_step": best_step,
        "final_val_loss": losses[max(losses)] if losses else None,
    }
    if end and end.get("best_val_loss") is not None:  # the worker's own record wins (it knows best/)
        result.update(best_val_loss=end["best_val_loss"], best_step=end.get("best_step"))
    return result


def build_summary(run_dir: Path, status: str, reason: str | None, message: str | None = None) -> RunSummary:
    records = read_metrics(run_dir)
    steps, evals = by_step(records, "step"), by_step(records, "eval")
    starts = [r for r in records if r.get("event") == "start"]
    ends = [r for r in records if r.get("event") == "end"]
    end = ends[-1] if ends and status == "completed" else None
    recoveries = [r for r in records if r.get("event") == "recovery"]
    speeds = [s["tokens_per_s"] for s in steps.values() if isinstance(s.get("tokens_per_s"), (int, float))]
    memory = [s["memory_bytes"] for s in steps.values() if isinstance(s.get("memory_bytes"), (int, float))]
    last_step = max(steps) if steps else (end or {}).get("step")
    final_loss = (end or {}).get("final_train_loss")
    if final_loss is None and steps:
        final_loss = steps[max(steps)].get("loss")
    layout = RunLayout(run_dir)
    last = latest_checkpoint(layout)
    return RunSummary(
        run_id=run_dir.name,
        status=status,
        reason=reason,
        message=message,
        steps=last_step,
        total_steps=starts[-1].get("total_steps") if starts else None,
        **_val_results(evals, end),
        final_train_loss=final_loss,
        tokens_per_s=round(statistics.median(speeds), 1) if speeds else None,
        peak_memory_bytes=max(memory) if memory else None,
        duration_s=_duration(records),
        attempts=len({r.get("attempt") for r in records if r.get("attempt") is not None}),
        recoveries=[
            {k: r.get(k) for k in ("kind", "attempt", "next_attempt", "step", "changes", "explanation", "resume_from")}
            for r in recoveries
        ],
        config_changes=_config_changes(recoveries),
        paths={
            "run_dir": str(run_dir),
            "best": str(layout.best) if layout.best.is_dir() else None,
            "last_checkpoint": str(last) if last else None,
            "config": str(layout.config),
            "metrics": str(layout.metrics),
            "logs": str(layout.logs),
            "loss_plot": None,
        },
    )


def plot_loss(run_dir: Path, records: list[dict[str, Any]]) -> Path | None:
    """loss.png: training and validation loss by step, recoveries marked. None without data or matplotlib."""
    steps, evals = by_step(records, "step"), by_step(records, "eval")
    train = [(step, r["loss"]) for step, r in steps.items() if isinstance(r.get("loss"), (int, float))]
    val = [(step, r["val_loss"]) for step, r in evals.items() if isinstance(r.get("val_loss"), (int, float))]
    if not train and not val:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed: a file, also on servers and in containers
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=100)
    if train:
        axes.plot(*zip(*train, strict=True), label="training loss", color="tab:blue", linewidth=1.2)
    if val:
        axes.plot(*zip(*val, strict=True), label="validation loss", color="tab:orange", marker="o", linewidth=1.5)
    for record in (r for r in records if r.get("event") == "recovery" and isinstance(r.get("step"), int)):
        axes.axvline(record["step"], color="tab:red", linestyle="--", linewidth=1)
        axes.annotate(
            record.get("kind", "recovery"),
            (record["step"], 1),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
            color="tab:red",
        )
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(f"{run_dir.name}")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = RunLayout(run_dir).loss_plot
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp)
    plt.close(figure)
    tmp.replace(path)
    return path


def write_summary(run_dir: Path, status: str, reason: str | None, message: str | None = None) -> RunSummary:
    """Write summary.json (its one writer) and loss.png; returns the summary."""
    summary = build_summary(run_dir, status, reason, message)
    try:
        plot = plot_loss(run_dir, read_metrics(run_dir))
    except OSError:  # a full disk must not also cost the summary, which is far smaller
        plot = None
    summary.paths["loss_plot"] = str(plot) if plot else None
    summary.save(run_dir)
    return summary
