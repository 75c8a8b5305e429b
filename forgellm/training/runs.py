"""Runs of `forge train`: ids, the ``runs/<id>/`` folder (see protocol.py), the prepared data a run
trains on, its checkpoints, and the project lock that keeps two trainings from sharing a project."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from forgellm.config.io import load_config, save_config  # load_config: run snapshots
from forgellm.config.schema import ForgeConfig
from forgellm.errors import ErrorCode, ForgeError
from forgellm.project.layout import ProjectLayout, RunLayout
from forgellm.project.prepared import PreparedData, published_data
from forgellm.project.run_record import RunSpec, run_folders, run_status


@dataclass
class Run:
    """One run folder with the config its next worker trains with."""

    run_dir: Path
    spec: RunSpec
    config: ForgeConfig

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.run_dir)

    def save_config(self, config: ForgeConfig) -> None:
        """Rewrite the snapshot (only between attempts: a running worker has already read it)."""
        self.config = config
        save_config(config, self.layout.config)


@dataclass(frozen=True)
class TrainingData:
    """The prepared data a new run trains on, and the model folder it trains."""

    prepared: PreparedData
    model_dir: Path


# ------------------------------------------------------------------------------------------------ ids


def _slug(text: str, limit: int = 32) -> str:
    name = Path(text.rstrip("/")).name or text  # a local folder or hub id: its last part names the model
    slug = re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-.")
    return slug[:limit].rstrip("-.") or "model"


def new_run_id(config: ForgeConfig, runs_dir: Path, now: datetime | None = None) -> str:
    """`20261122-224312-lora-smollm2-135m`: sorts by start time; a suffix keeps ids of one second apart."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{config.training.method}-{_slug(config.model.ref)}"
    run_id, number = base, 1
    while (runs_dir / run_id).exists():
        number += 1
        run_id = f"{base}-{number}"
    return run_id


def _run_order(run_dir: Path) -> tuple[str, float]:
    # The id starts with the start time to the second; within one second, the spec's write time decides.
    return run_dir.name[:15], RunLayout(run_dir).spec.stat().st_mtime


def list_runs(project_dir: Path) -> list[Path]:
    """Run folders (those with a run.json), oldest first."""
    return sorted((run.folder for run in run_folders(ProjectLayout(project_dir))), key=_run_order)


# ------------------------------------------------------------------------------------------------ prepared data


def find_prepared(project_dir: Path, config: ForgeConfig) -> TrainingData:
    """The newest data/prepared/<fp>/ made with forge.yaml's current data, preprocessing, model and template."""
    prepare_cmd = f"forge prepare {config.data.source or 'FILE'}"
    layout = ProjectLayout(project_dir)
    published = published_data(layout)
    if not published:
        partial = bool(layout.partial_prepared_dirs())
        raise ForgeError(
            "There is no prepared data to train on"
            + (" (a preparation was interrupted before it finished)." if partial else "."),
            fix=f"Run `{prepare_cmd}` first; it turns your data into training examples for the model.",
            code=ErrorCode.PREPARED_DATA_MISSING,
        )
    setup, tokenizer, wanted, template = _wanted(project_dir, config)
    for data in published:
        if data.settings_fingerprint == wanted:
            _check_template(project_dir, data, template, prepare_cmd)
            return TrainingData(data, Path(setup.model_dir))
    newest = published[0]
    folder = newest.folder
    if newest.tokenizer_id != tokenizer:
        raise ForgeError(
            f"The prepared data in {folder.relative_to(project_dir)} was tokenized for {newest.tokenizer_id}, "
            f"but forge.yaml's model ({config.model.ref}) uses the tokenizer {tokenizer}: token ids of one "
            "model mean nothing to another.",
            fix=f"Run `{prepare_cmd}` again to prepare the data for {config.model.ref}.",
            code=ErrorCode.PREPARED_DATA_STALE,
        )
    _check_template(project_dir, newest, template, prepare_cmd)
    raise ForgeError(
        "forge.yaml's data, preprocessing or model settings changed since the data was prepared "
        f"(newest: {folder.relative_to(project_dir)}), so no prepared data matches the plan.",
        fix=f"Run `{prepare_cmd}` again with the current forge.yaml.",
        code=ErrorCode.PREPARED_DATA_STALE,
    )


def _wanted(project_dir: Path, config: ForgeConfig) -> tuple[Any, str, str, dict[str, str]]:
    """What data prepared for `config` records: (chat setup, tokenizer id, settings fingerprint, template)."""
    from forgellm.data.prepare.manifest import settings_fingerprint, template_record, tokenizer_id
    from forgellm.models.loading import chat_setup

    setup = chat_setup(config.model.ref, config.model.chat_template, base_dir=project_dir)
    tokenizer = tokenizer_id(setup)
    wanted = settings_fingerprint(config, tokenizer, base_dir=project_dir)
    return setup, tokenizer, wanted, template_record(setup.chat_format, setup.template_name)


def _check_template(project_dir: Path, data: PreparedData, current: dict[str, str], prepare_cmd: str) -> None:
    """Refuse data rendered with another chat template than the one forge.yaml gives now (an edited
    .jinja file, another tokenizer template): the model would learn one format and be served another."""
    recorded = data.chat_template
    if not isinstance(recorded, dict) or recorded.get("sha256") == current["sha256"]:
        return
    raise ForgeError(
        f"The chat template changed since the data in {data.folder.relative_to(project_dir)} was prepared "
        f"(template text sha256 {str(recorded.get('sha256'))[:12]} then, {current['sha256'][:12]} now), so the "
        "prepared examples are stale.",
        fix=f"Run `{prepare_cmd}` again to render the data with the current template (or restore the template "
        "it was prepared with).",
        code=ErrorCode.PREPARED_DATA_STALE,
        data={"prepared": str(data.folder), "recorded_sha256": recorded.get("sha256"), "sha256": current["sha256"]},
    )


# ------------------------------------------------------------------------------------------------ runs


def create_run(
    layout: ProjectLayout, config: ForgeConfig, *, prepared: PreparedData | None = None, max_steps: int | None = None
) -> Run:
    """A new run folder: run.json and the config snapshot from `config` (forge.yaml, loaded by the caller).
    `prepared`: the data `forge prepare` just published (ignite hands it on); None finds the data that
    matches the config."""
    if max_steps is not None:
        config = _with_max_steps(config, max_steps)
    chosen = find_prepared(layout.root, config) if prepared is None else _handed(layout, prepared, config)
    layout.runs_dir.mkdir(parents=True, exist_ok=True)
    run = layout.run(new_run_id(config, layout.runs_dir))
    run.logs.mkdir(parents=True)
    data = chosen.prepared
    spec = RunSpec(run.run_id, str(layout.root), str(data.folder), str(chosen.model_dir), data.tokenizer_id)
    spec.save(run)
    run = Run(run.folder, spec, config)
    run.save_config(config)
    return run


def _handed(layout: ProjectLayout, prepared: PreparedData, config: ForgeConfig) -> TrainingData:
    """The data prepare handed on, checked against the config like data found on disk: forge.yaml edited
    between two ignite runs must not train on examples prepared for the old settings or template."""
    setup, _tokenizer, wanted, template = _wanted(layout.root, config)
    prepare_cmd = f"forge prepare {config.data.source or 'FILE'}"
    if prepared.settings_fingerprint != wanted:
        raise ForgeError(
            f"The prepared data in {prepared.folder} was made for other settings than forge.yaml's now "
            f"(model {prepared.model or '?'}, template {prepared.template or '?'}).",
            fix=f"Run `{prepare_cmd}` again with the current forge.yaml.",
            code=ErrorCode.PREPARED_DATA_STALE,
            data={"prepared": str(prepared.folder), "model": prepared.model},
        )
    _check_template(layout.root, prepared, template, prepare_cmd)
    return TrainingData(prepared, Path(setup.model_dir))


def open_run(project_dir: Path, which: str | bool, *, max_steps: int | None = None) -> Run:
    # The run's own snapshot (runs/<id>/config.yaml, with healing's changes) is its config, not forge.yaml.
    """An existing run to resume: `which` is a run id (or its folder), or True for the newest unfinished one."""
    run_dir = _latest_unfinished(project_dir) if which is True else _named_run(project_dir, str(which))
    spec = RunSpec.load(run_dir)
    config = load_config(RunLayout(run_dir).config, environ={}).config  # the snapshot, with healing's changes
    if max_steps is not None:
        config = _with_max_steps(config, max_steps)
    for path, what in ((spec.prepared_dir, "prepared data"), (spec.model_dir, "model folder")):
        if not Path(path).exists():
            raise ForgeError(
                f"Run {spec.run_id} cannot be resumed: its {what} {path} no longer exists.",
                fix="Start a new run with `forge train` (after `forge prepare FILE` if the data is gone).",
                code=ErrorCode.RUN_NOT_RESUMABLE, data={"run": spec.run_id, "path": str(path)},
            )
    run = Run(run_dir, spec, config)
    run.save_config(config)
    run.layout.logs.mkdir(exist_ok=True)
    return run


def _with_max_steps(config: ForgeConfig, max_steps: int) -> ForgeConfig:
    data = config.model_dump(mode="json")
    data["training"]["max_steps"] = max_steps
    return ForgeConfig.model_validate(data)


def _named_run(project_dir: Path, name: str) -> Path:
    run_dir = named_run_dir(project_dir, name)
    if run_status(run_dir) == "completed":
        raise ForgeError(
            f"Run {run_dir.name} already completed; there is nothing to resume.",
            fix="Start a new run with `forge train` (add --max-steps N to train for longer).",
            code=ErrorCode.NOTHING_TO_RESUME,
            data={"run": run_dir.name},
        )
    return run_dir.resolve()


def named_run_dir(project_dir: Path, name: str) -> Path:
    """The folder of run `name` (its id, or its folder); a ForgeError naming the runs there when none is."""
    candidate = Path(name).expanduser()
    layout = ProjectLayout(project_dir)
    run = RunLayout(candidate) if RunLayout(candidate).spec.is_file() else layout.run(name)
    if not run.spec.is_file():
        known = ", ".join(p.name for p in list_runs(project_dir)[-5:]) or "none yet"
        raise ForgeError(
            f"There is no run '{name}' in {layout.runs_dir}.",
            fix=f"Runs here: {known}.",
            code=ErrorCode.RUN_NOT_FOUND,
            data={"run": name},
        )
    return run.folder


def _latest_unfinished(project_dir: Path) -> Path:
    unfinished = [p for p in list_runs(project_dir) if run_status(p) != "completed"]
    if not unfinished:
        raise ForgeError(
            "There is no unfinished run to resume in this project.",
            fix="Start a new run with `forge train`.",
            code=ErrorCode.RUN_NOT_FOUND,
        )
    return unfinished[-1].resolve()
