"""Runs of `forge train`: ids, the ``runs/<id>/`` folder (see protocol.py), the prepared data a run
trains on, its checkpoints, and the project lock that keeps two trainings from sharing a project."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from forgellm.config.io import atomic_write_text, load_config, read_json_object, save_config
from forgellm.config.schema import ForgeConfig
from forgellm.errors import ErrorCode, ForgeError
from forgellm.training.protocol import CHECKPOINTS, LOGS, RUN_CONFIG, RUN_SPEC, SUMMARY, TRAINER_STATE, RunSpec

RUNS_DIR = "runs"
LOCK_FILE = Path(".forge") / "train.lock"
_CHECKPOINT_NAME = re.compile(r"^step-(\d+)$")


@dataclass
class Run:
    """One run folder with the config its next worker trains with."""

    run_dir: Path
    spec: RunSpec
    config: ForgeConfig

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    def save_config(self, config: ForgeConfig) -> None:
        """Rewrite the snapshot (only between attempts: a running worker has already read it)."""
        self.config = config
        save_config(config, self.run_dir / RUN_CONFIG)


@dataclass(frozen=True)
class PreparedData:
    folder: Path
    tokenizer_id: str
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
    return run_dir.name[:15], (run_dir / RUN_SPEC).stat().st_mtime


def list_runs(project_dir: Path) -> list[Path]:
    """Run folders (those with a run.json), oldest first."""
    runs = project_dir / RUNS_DIR
    if not runs.is_dir():
        return []
    return sorted((p for p in runs.iterdir() if (p / RUN_SPEC).is_file()), key=_run_order)


def run_status(run_dir: Path) -> str | None:
    """The status summary.json records (completed, interrupted, failed); None while none was written."""
    try:
        return json.loads((run_dir / SUMMARY).read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        return None


# ------------------------------------------------------------------------------------------------ checkpoints


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first. The worker writes under a temporary name and renames when
    done, and the trainer state is its last file, so a folder without it was never finished."""
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _CHECKPOINT_NAME.match(path.name)
        if match and path.is_dir() and (path / TRAINER_STATE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1][1] if found else None


# ------------------------------------------------------------------------------------------------ prepared data


def _complete_manifests(project_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, manifest) of every published preparation, newest first."""
    from forgellm.data.manifest import MANIFEST

    prepared = project_dir / "data" / "prepared"
    found = []
    for folder in prepared.glob("*") if prepared.is_dir() else []:
        if folder.name.startswith(".") or not (folder / MANIFEST).is_file():
            continue
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and manifest.get("complete"):
            found.append((folder, manifest))
    return sorted(found, key=lambda item: (item[0] / MANIFEST).stat().st_mtime, reverse=True)


def find_prepared(project_dir: Path, config: ForgeConfig) -> PreparedData:
    """The newest data/prepared/<fp>/ made with forge.yaml's current data, preprocessing and model settings."""
    from forgellm.data.manifest import settings_fingerprint, tokenizer_id
    from forgellm.models.loading import chat_setup

    prepare_cmd = f"forge prepare {config.data.source or 'FILE'}"
    published = _complete_manifests(project_dir)
    if not published:
        partial = any((project_dir / "data" / "prepared").glob(".partial-*"))
        raise ForgeError(
            "There is no prepared data to train on"
            + (" (a preparation was interrupted before it finished)." if partial else "."),
            fix=f"Run `{prepare_cmd}` first; it turns your data into training examples for the model.",
            code=ErrorCode.PREPARED_DATA_MISSING,
        )
    setup = chat_setup(config.model.ref, config.model.chat_template, base_dir=project_dir)
    tokenizer = tokenizer_id(setup)
    wanted = settings_fingerprint(config, tokenizer)
    for folder, manifest in published:
        if manifest.get("settings_fingerprint") == wanted:
            return PreparedData(folder, tokenizer, Path(setup.model_dir))
    folder, newest = published[0]
    if newest.get("tokenizer") != tokenizer:
        raise ForgeError(
            f"The prepared data in {folder.relative_to(project_dir)} was tokenized for {newest.get('tokenizer')}, "
            f"but forge.yaml's model ({config.model.ref}) uses the tokenizer {tokenizer}: token ids of one "
            "model mean nothing to another.",
            fix=f"Run `{prepare_cmd}` again to prepare the data for {config.model.ref}.",
            code=ErrorCode.PREPARED_DATA_STALE,
        )
    raise ForgeError(
        "forge.yaml's data, preprocessing or model settings changed since the data was prepared "
        f"(newest: {folder.relative_to(project_dir)}), so no prepared data matches the plan.",
        fix=f"Run `{prepare_cmd}` again with the current forge.yaml.",
        code=ErrorCode.PREPARED_DATA_STALE,
    )


# ------------------------------------------------------------------------------------------------ runs


def create_run(project_dir: Path, *, max_steps: int | None = None) -> Run:
    """A new run folder: run.json and the config snapshot from forge.yaml."""
    config = load_config(project_dir).config
    if max_steps is not None:
        config = _with_max_steps(config, max_steps)
    prepared = find_prepared(project_dir, config)
    runs_dir = project_dir / RUNS_DIR
    runs_dir.mkdir(parents=True, exist_ok=True)
    run_id = new_run_id(config, runs_dir)
    run_dir = runs_dir / run_id
    (run_dir / LOGS).mkdir(parents=True)
    spec = RunSpec(run_id, str(project_dir), str(prepared.folder), str(prepared.model_dir), prepared.tokenizer_id)
    spec.save(run_dir)
    run = Run(run_dir, spec, config)
    run.save_config(config)
    return run


def open_run(project_dir: Path, which: str | bool, *, max_steps: int | None = None) -> Run:
    """An existing run to resume: `which` is a run id (or its folder), or True for the newest unfinished one."""
    run_dir = _latest_unfinished(project_dir) if which is True else _named_run(project_dir, str(which))
    spec = RunSpec.load(run_dir)
    config = load_config(run_dir / RUN_CONFIG, environ={}).config  # the snapshot, with healing's changes
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
    (run_dir / LOGS).mkdir(exist_ok=True)
    return run


def _with_max_steps(config: ForgeConfig, max_steps: int) -> ForgeConfig:
    data = config.model_dump(mode="json")
    data["training"]["max_steps"] = max_steps
    return ForgeConfig.model_validate(data)


def _named_run(project_dir: Path, name: str) -> Path:
    candidate = Path(name).expanduser()
    run_dir = candidate if (candidate / RUN_SPEC).is_file() else project_dir / RUNS_DIR / name
    if not (run_dir / RUN_SPEC).is_file():
        known = ", ".join(p.name for p in list_runs(project_dir)[-5:]) or "none yet"
        raise ForgeError(
            f"There is no run '{name}' in {project_dir / RUNS_DIR}.",
            fix=f"Runs here: {known}.",
            code=ErrorCode.RUN_NOT_FOUND,
            data={"run": name},
        )
    if run_status(run_dir) == "completed":
        raise ForgeError(
            f"Run {run_dir.name} already completed; there is nothing to resume.",
            fix="Start a new run with `forge train` (add --max-steps N to train for longer).",
            code=ErrorCode.NOTHING_TO_RESUME,
            data={"run": run_dir.name},
        )
    return run_dir.resolve()


def _latest_unfinished(project_dir: Path) -> Path:
    unfinished = [p for p in list_runs(project_dir) if run_status(p) != "completed"]
    if not unfinished:
        raise ForgeError(
            "There is no unfinished run to resume in this project.",
            fix="Start a new run with `forge train`.",
            code=ErrorCode.RUN_NOT_FOUND,
        )
    return unfinished[-1].resolve()


# ------------------------------------------------------------------------------------------------ lock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class TrainLock:
    """One `forge train` per project. An OS lock (flock) on .forge/train.lock: the kernel releases it
    when its holder dies, even by `kill -9`, so a stale lock file is simply taken over. The file
    records who holds it, so the refusal can name the run and its process."""

    def __init__(self, project_dir: Path) -> None:
        self.path = project_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self, run_id: str | None = None) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: the holder's record stays
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._busy() from None
        self._fd = fd
        self.record(run_id)

    def record(self, run_id: str | None) -> None:
        """Write who holds the lock (the run id is known only once the run folder exists)."""
        assert self._fd is not None, "record() needs the lock"
        record = json.dumps({"run_id": run_id, "pid": os.getpid(), "started": time.time()})
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, record.encode(), 0)

    def holder(self) -> dict[str, Any]:
        return read_json_object(self.path)

    def _busy(self) -> ForgeError:
        holder = self.holder()
        run_id, pid = holder.get("run_id") or "(starting)", holder.get("pid", "?")
        started = holder.get("started")
        since = f", started {datetime.fromtimestamp(started):%Y-%m-%d %H:%M}" if isinstance(started, float) else ""
        alive = isinstance(pid, int) and _pid_alive(pid)
        return ForgeError(
            f"Another `forge train` is running in this project: run {run_id} (process {pid}{since})"
            + ("." if alive else ", holding the lock from another machine or container."),
            fix=f"Wait for it to finish, or stop it with Ctrl-C in its terminal (or `kill -INT {pid}`); "
            "`forge train --resume` then continues it from its last checkpoint.",
            code=ErrorCode.TRAIN_LOCKED,
            data={"run": run_id, "pid": pid},
        )

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> TrainLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
