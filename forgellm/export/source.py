"""What `forge export` exports: a run's best (or last) weights, the base model they sit on, and the
settings they were trained with — found and checked before any heavy work starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgellm.config.schema import ForgeConfig
from forgellm.errors import ErrorCode, ForgeError, cause
from forgellm.files import read_json_object
from forgellm.project.run_record import RunRecord, RunSpec, RunSummary, run_status

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
    summary: RunSummary | None  # summary.json of the run (None when the run wrote none)

    @property
    def is_adapter(self) -> bool:
        return (self.weights_dir / ADAPTER_CONFIG).is_file()


def _pick_run(project_dir: Path, run: str | None) -> Path:
    from forgellm.training.runs import list_runs, named_run_dir

    if run is not None:
        return named_run_dir(project_dir, run).resolve()
    runs = list_runs(project_dir)
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
    usable = [p for p in runs if (record := RunRecord.load(p)).best or record.last_checkpoint]
    if not usable:
        raise ForgeError(
            "No training run in this project has saved weights yet.",
            fix="Let `forge train` run to its first checkpoint, or continue one with `forge train --resume`.",
            code=ErrorCode.WEIGHTS_MISSING,
        )
    return usable[-1].resolve()


def find_export_source(project_dir: Path, run: str | RunRecord | None = None) -> ExportSource:
    """The run to export (`run` = its record as training handed it, its id or folder; default the newest
    completed run) and its weights."""
    if isinstance(run, RunRecord):
        run_dir, record = run.layout.folder.resolve(), run
    else:
        run_dir = _pick_run(project_dir, run)
        record = RunRecord.load(run_dir)
    spec = RunSpec.load(run_dir)
    last = record.last_checkpoint
    if record.best is not None:
        weights_dir, checkpoint = record.best, record.best.name
    elif last is not None:
        weights_dir, checkpoint = last.path, last.path.name
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
    source = ExportSource(spec.run_id, run_dir, weights_dir, checkpoint, base, record.load_config(), record.summary)
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


def training_chat_setup(source: ExportSource) -> Any:
    """The tokenizer and chat format to export: the template the run's data was rendered with.

    forge.yaml's template settings are rebuilt and compared with the text recorded at preparation
    (manifest.json). A Jinja template edited (or deleted) since is replaced by the recorded text;
    a builtin family that renders differently now is refused: the export would teach a client
    another format than the model learned.
    """
    from forgellm.models.loading import chat_setup

    project_dir = source.run_dir.parent.parent  # a custom .jinja path is relative to the project
    settings = source.config.model.chat_template
    recorded = _recorded_template(source)
    try:
        setup = chat_setup(str(source.base_model_dir), settings, base_dir=project_dir)
    except ForgeError:
        if recorded is None or settings.name != "custom":
            raise
        setup = None  # the .jinja file is gone: the recorded text is what training used
    if recorded is None or (setup is not None and _template_sha(setup) == recorded["sha256"]):
        return setup
    if settings.name not in ("custom", "tokenizer"):
        raise ForgeError(
            f"The '{setup.template_name}' chat template renders differently now than when run {source.run_id}'s "
            "data was prepared (another Forge version?), so the export would ship a template the model was not "
            "trained on.",
            fix="Export with the Forge version the run was trained with, or prepare and train again.",
            code=ErrorCode.PREPARED_DATA_STALE,
            data={"run": source.run_id, "template": setup.template_name},
        )
    inline = settings.model_copy(update={"name": "custom", "jinja": recorded["text"]})
    rebuilt = chat_setup(str(source.base_model_dir), inline, base_dir=project_dir)
    if _template_sha(rebuilt) != recorded["sha256"]:
        raise ForgeError(
            f"The chat template recorded with run {source.run_id}'s prepared data cannot be rebuilt exactly.",
            fix="Prepare and train again with the current template.",
            code=ErrorCode.PREPARED_DATA_STALE,
            data={"run": source.run_id},
        )
    rebuilt.warnings.append(
        "model.chat_template changed since the training data was prepared; the export uses the template "
        "training used (recorded in the prepared data's manifest.json), not the current one."
    )
    return rebuilt


def _recorded_template(source: ExportSource) -> dict[str, str] | None:
    """The template recorded with the run's prepared data; None for data prepared before it was recorded."""
    from forgellm.project.prepared import PreparedData

    data = PreparedData.load(Path(RunSpec.load(source.run_dir).prepared_dir))
    recorded = data.chat_template if data is not None else None
    return recorded if isinstance(recorded, dict) and recorded.get("text") and recorded.get("sha256") else None


def _template_sha(setup: Any) -> str:
    from forgellm.data.prepare.manifest import template_record

    return template_record(setup.chat_format, setup.template_name)["sha256"]
