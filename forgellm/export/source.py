"""What `forge export` exports: a run's best (or last) weights, the base model they sit on, and the
settings they were trained with — found and checked before any heavy work starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgellm.config.io import load_config, read_json_object
from forgellm.config.schema import ForgeConfig
from forgellm.errors import ErrorCode, ForgeError, cause

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass(frozen=True)
class ExportSource:
    """One run's trained weights, ready to be merged and converted."""

    run_id: str
    run_dir: Path
    weights_dir: Path  # best/ or checkpoints/step-N/: a peft adapter folder, or a full model folder
    checkpoint: str  # "best" or "step-N", for the model card
    base_model_dir: Path  # the Hugging Face folder the run trained on
    config: ForgeConfig  # the run's config snapshot (with any healing changes)
    summary: dict[str, Any]  # summary.json of the run ({} when the run wrote none)

    @property
    def is_adapter(self) -> bool:
        return (self.weights_dir / ADAPTER_CONFIG).is_file()


def _pick_run(project_dir: Path, run: str | None) -> Path:
    from forgellm.training.protocol import RUN_SPEC
    from forgellm.training.runs import RUNS_DIR, latest_checkpoint, list_runs, run_status

    runs = list_runs(project_dir)
    if run is not None:
        candidate = Path(run).expanduser()
        run_dir = candidate if (candidate / RUN_SPEC).is_file() else project_dir / RUNS_DIR / run
        if not (run_dir / RUN_SPEC).is_file():
            known = ", ".join(p.name for p in runs[-5:]) or "none yet"
            raise ForgeError(
                f"There is no run '{run}' in {project_dir / RUNS_DIR}.",
                fix=f"Runs here: {known}.",
                code=ErrorCode.RUN_NOT_FOUND,
                data={"run": run},
            )
        return run_dir.resolve()
    if not runs:
        raise ForgeError(
            "There is nothing to export yet: this project has no training run.",
            fix="Train first: `forge train` (after `forge plan` and `forge prepare FILE`), or run everything "
            'with `forge ignite FILE "GOAL"`.',
            code=ErrorCode.NO_TRAINING_RUN,
        )
    completed = [p for p in runs if run_status(p) == "completed"]
    if completed:
        return completed[-1].resolve()
    # No run finished: the newest one that saved any weights still exports (say so in the card).
    usable = [p for p in runs if (p / "best").is_dir() or latest_checkpoint(p) is not None]
    if not usable:
        raise ForgeError(
            "No training run in this project has saved weights yet.",
            fix="Let `forge train` run to its first checkpoint, or continue one with `forge train --resume`.",
            code=ErrorCode.WEIGHTS_MISSING,
        )
    return usable[-1].resolve()


def find_export_source(project_dir: Path, run: str | None = None) -> ExportSource:
    """The run to export (`run` = id or folder; default the newest completed run) and its weights."""
    from forgellm.training.protocol import BEST, RUN_CONFIG, SUMMARY, RunSpec
    from forgellm.training.runs import latest_checkpoint

    run_dir = _pick_run(project_dir, run)
    spec = RunSpec.load(run_dir)
    best = run_dir / BEST
    last = latest_checkpoint(run_dir)
    if best.is_dir() and any(best.iterdir()):
        weights_dir, checkpoint = best, "best"
    elif last is not None:
        weights_dir, checkpoint = last, last.name
    else:
        raise ForgeError(
            f"Run {spec.run_id} has no saved weights (no best/ and no checkpoint).",
            fix="Train until a checkpoint is saved (`forge train --resume` continues it), or export another run "
            "with --run ID.",
            code=ErrorCode.WEIGHTS_MISSING,
        )
    base = Path(spec.model_dir)
    if not (base / "config.json").is_file():
        raise ForgeError(
            f"The base model of run {spec.run_id} is gone: {base} has no config.json.",
            fix="Restore the model folder, or re-create it with `forge models` / `forge plan` for "
            "the same model, then export again.",
            code=ErrorCode.WEIGHTS_MISSING,
        )
    config = load_config(run_dir / RUN_CONFIG, environ={}).config
    summary = read_json_object(run_dir / SUMMARY)
    source = ExportSource(spec.run_id, run_dir, weights_dir, checkpoint, base, config, summary)
    check_weights(source)
    return source


def check_weights(source: ExportSource) -> None:
    """Refuse a damaged or foreign adapter before loading a model: a clear message, not a stack trace."""
    folder = source.weights_dir
    if not source.is_adapter:
        if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
            raise ForgeError(
                f"{folder} holds neither a LoRA adapter nor a full model.",
                fix="Use another run (forge export --run ID), or train again.",
                code=ErrorCode.WEIGHTS_MISSING,
            )
        return
    adapter = read_json_object(folder / ADAPTER_CONFIG)
    weights = folder / ADAPTER_WEIGHTS
    if not adapter or not weights.is_file():
        raise ForgeError(
            f"The LoRA adapter in {folder} is incomplete or damaged "
            f"({'adapter_config.json unreadable' if not adapter else 'adapter_model.safetensors missing'}).",
            fix="Use another run (forge export --run ID), or train again.",
            code=ErrorCode.WEIGHTS_DAMAGED,
        )
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as handle:
            names = list(handle.keys())
    except Exception as exc:  # safetensors raises several kinds for truncated or foreign files
        raise ForgeError(
            f"The adapter weights {weights} cannot be read ({type(exc).__name__}: {exc}).",
            fix="The file is damaged (an interrupted copy?). Use another run (forge export --run ID), or train again.",
            code=ErrorCode.WEIGHTS_DAMAGED,
            data={"cause": cause(exc)},
        ) from None
    if not names:
        raise ForgeError(
            f"The adapter weights {weights} are empty.",
            fix="Train again, or export another run.",
            code=ErrorCode.WEIGHTS_DAMAGED,
        )
    base_config = read_json_object(source.base_model_dir / "config.json")
    wanted = adapter.get("target_modules")
    if isinstance(wanted, list) and base_config.get("model_type") and not _modules_exist(names, wanted):
        raise ForgeError(
            f"The adapter in {folder} targets modules {wanted} that its tensors do not contain.",
            fix="The adapter and its config do not belong together; use another run or train again.",
            code=ErrorCode.ADAPTER_MISMATCH,
        )


def _modules_exist(tensor_names: list[str], modules: list[str]) -> bool:
    return any(f".{m}." in name for name in tensor_names for m in modules)
