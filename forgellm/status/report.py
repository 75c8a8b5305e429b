"""`forge status`: where a project stands, read from its files in a fraction of a second.

Only cheap reads: forge.yaml, the JSON records each stage writes, file sizes and times, the hardware
probe (no torch). No tokenizer, no model, no network; every read survives a damaged file.

The report (`forge status --json`) has these keys; scripts may rely on them:
  found, project_dir, project {name}, plan {file, valid, problems, modified_at, planned, goal, model,
  method, stage, max_length, epochs, max_steps, batch_size, ...}, model {ref, kind, ok, ready, problem},
  data {source, state: none|current|stale|interrupted|unknown, current, stale_reasons, prepare_command,
  prepared [...], interrupted [...]}, runs [{id, state, steps, total_steps, best_val_loss, ...}] oldest
  first, training_now, exports [...], eval, hardware, advisor, notes, next {command, reason,
  alternatives, run_in}. Outside a project: found, project_dir, hardware, next.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forgellm.config.io import CONFIG_FILENAME, LoadedConfig, load_config
from forgellm.config.schema import ForgeConfig
from forgellm.errors import ForgeError
from forgellm.project.find import find_project
from forgellm.status.data import prepared_status
from forgellm.status.files import iso_mtime
from forgellm.status.next_step import next_step
from forgellm.status.pipeline import pipeline_status
from forgellm.status.stages import eval_status, exports_status, runs_status, training_now


def project_status(directory: str | Path = ".") -> dict[str, Any]:
    """The status report of the project holding `directory` (any folder inside it), as plain JSON data."""
    here = Path(directory).expanduser().resolve()
    root = find_project(here)
    if root is None:
        report: dict[str, Any] = {"found": False, "project_dir": None, "hardware": _hardware(here)}
        report["next"] = {**next_step(report), "run_in": str(here)}
        return report
    loaded, problems = _load(root)
    config = loaded.config if loaded else None
    data = prepared_status(root, config, here)
    report = {
        "found": True,
        "project_dir": str(root),
        "project": {"name": config.project.name if config else root.name},
        "plan": _plan(root, loaded, problems),
        "model": _model(config.model.ref) if config else None,
        "data": data,
        "runs": runs_status(root, data["current"]),
        "training_now": training_now(root),
        "exports": exports_status(root),
        "eval": eval_status(root),
        "pipeline": pipeline_status(root, config),
        "hardware": _hardware(root),
        "advisor": _advisor(config) if config else None,
    }
    report["notes"] = _notes(report)
    # File paths in the commands are relative to `here`, the folder status was asked about.
    report["next"] = {**next_step(report), "run_in": str(here)}
    return report


def _load(root: Path) -> tuple[LoadedConfig | None, list[str]]:
    try:
        return load_config(root), []
    except ForgeError as exc:
        return None, list(exc.details) or [exc.message]


def _plan(root: Path, loaded: LoadedConfig | None, problems: list[str]) -> dict[str, Any]:
    path = root / CONFIG_FILENAME
    plan: dict[str, Any] = {"file": str(path), "valid": loaded is not None, "problems": problems}
    plan["modified_at"] = iso_mtime(path)
    if loaded is None:
        return plan
    config = loaded.config
    training = config.training
    plan.update(
        # `forge plan` fills hardware and explains the training section; `forge init` does neither.
        planned=config.hardware.gpu_arch is not None or training.rationale is not None,
        version=loaded.file_version,
        migration_notes=list(loaded.migration_notes),
        env_overrides=dict(loaded.env_overrides),
        goal=config.project.goal,
        model=config.model.ref,
        method=training.method,
        stage=training.stage,
        max_length=config.model.max_length,
        epochs=training.epochs,
        max_steps=training.max_steps,
        micro_batch_size=training.micro_batch_size,
        gradient_accumulation=training.gradient_accumulation,
        batch_size=training.micro_batch_size * training.gradient_accumulation,
        learning_rate=training.learning_rate,
        data_source=config.data.source,
    )
    return plan


def _model(ref: str) -> dict[str, Any]:
    """Whether model.ref resolves, and whether it is ready in the cache (else the first use converts or
    downloads it). Resolution reads the catalog and the disk; it never loads the model."""
    from forgellm.models.resolve import is_materialized, resolve_model

    try:
        source = resolve_model(ref)
    except ForgeError as exc:
        return {"ref": ref, "ok": False, "problem": exc.message, "ready": False}
    return {**source.to_dict(), "ok": True, "ready": is_materialized(source), "problem": None}


def _advisor(config: ForgeConfig) -> dict[str, Any]:
    from forgellm.config.settings import key_status

    advisor = config.advisor
    key: dict[str, Any] | None = None
    if advisor.provider != "rules":
        try:
            key = key_status(advisor.provider).to_dict()
        except ForgeError as exc:  # a damaged credentials file
            key = {"provider": advisor.provider, "available": False, "source": None, "problem": exc.message}
    return {"provider": advisor.provider, "model": advisor.model, "base_url": advisor.base_url, "key": key}


def _hardware(path: Path) -> dict[str, Any]:
    from forgellm.hardware.probe import probe_hardware

    try:
        info = probe_hardware(path)
    except (OSError, RuntimeError) as exc:  # psutil or the disk query failing must not hide the project
        return {"error": str(exc)}
    return {
        "cpu_physical_cores": info.cpu_physical_cores,
        "cpu_logical_cores": info.cpu_logical_cores,
        "ram_total_bytes": info.ram_total_bytes,
        "ram_available_bytes": info.ram_available_bytes,
        "disk_free_bytes": info.disk_free_bytes,
        "accelerator": info.accelerator,
        "gpus": [gpu.name for gpu in info.gpus],
        "preferred_precision": info.preferred_precision,
    }


def _notes(report: dict[str, Any]) -> list[str]:
    """Things worth knowing that are not the next step: old formats, overrides, damaged records."""
    notes: list[str] = []
    plan, data = report["plan"], report["data"]
    for note in plan.get("migration_notes", []):
        notes.append(f"forge.yaml is an older version ({note}); `forge config upgrade` rewrites it.")
    for key, variable in plan.get("env_overrides", {}).items():
        notes.append(f"{key} comes from the environment variable {variable}.")
    key = (report.get("advisor") or {}).get("key")
    if key and not key.get("available"):
        provider = key["provider"]
        notes.append(
            key.get("problem") or f"No {provider} API key: `forge login --provider {provider}` (needed to plan)."
        )
    if data["source"] and data["source_exists"] is False:
        notes.append(f"data.source {data['source']} does not exist (moved or deleted?).")
    for entry in data["interrupted"]:
        notes.append(f"Interrupted preparation {entry['name']} ({entry['chunks_done']} chunks done).")
    for label, entries, key_name in (
        ("data/prepared", data["prepared"], "name"),
        ("runs", report["runs"], "id"),
        ("exports", report["exports"], "name"),
    ):
        for entry in entries:
            notes.extend(f"{label}/{entry[key_name]}: {problem}." for problem in entry["problems"])
    evaluation = report["eval"]
    if evaluation and evaluation["damaged"]:
        notes.append("reports/eval.json is damaged or unreadable; `forge eval` writes it again.")
    if report["training_now"] and not report["training_now"].get("run_id"):
        notes.append(f"A `forge train` is starting (process {report['training_now'].get('pid')}).")
    return notes
