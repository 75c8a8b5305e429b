"""The models a Forge server offers (`forge serve`, the chat page of `forge ui`), by id:

- `base` (forge.yaml's model), `run:<run-id>` (that run's best weights), `export:<name>`;
- on a single-model server (`forge serve MODEL`), that one model, under one of those ids or its own name.

Each model is loaded on first use and kept (at most `MAX_LOADED` at once, the least recently used goes
first, so memory stays bounded). Loading and generating happen in one worker thread per host: requests
queue and run one at a time (two generations at once would only halve each one's speed and double the
memory), and the event loop never waits on a model. A model that fails to load answers with its
ForgeError (remembered for `RETRY_LOAD_AFTER_S`, so clients that retry do not reload it each time); the
other models keep serving.

Each model has a mode: `chat` (rendered through the chat template Forge trained it with) or `completion`
(a base or continued-pre-training model, prompted with plain text). `detect_mode` holds that rule.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgellm.errors import ErrorCode, ForgeError, cause
from forgellm.web.generation import Finished, GenerationRequest, LoadedModel, run_generation

if TYPE_CHECKING:
    from forgellm.inference.model_choice import ModelChoice

CHAT, COMPLETION = "chat", "completion"
MAX_LOADED = 2
RETRY_LOAD_AFTER_S = 30.0


@dataclass(frozen=True)
class ModelEntry:
    """One model a server offers; `choose` finds its weights and tokenizer (no weights are loaded)."""

    id: str
    name: str  # for people, e.g. "run 20261206-155445-lora-smollm2-135m (best)"
    kind: str  # base | run | export | path
    mode: str  # chat | completion
    mode_reason: str
    choose: Callable[[], ModelChoice] = field(repr=False, compare=False)
    created: int = 0  # unix time the weights were written (OpenAI's `created`)


def detect_mode(
    *, stage: str | None, template: str | None, own_template: bool | None, base_weights: bool = False
) -> tuple[str, str]:
    """(mode, why). `stage`: the training stage of a run or export (None: not trained by Forge);
    `template`: forge.yaml's model.chat_template.name; `own_template`: whether the tokenizer carries a
    chat template (None: not known yet); `base_weights`: the catalog lists these as base, not instruct."""
    if stage == "cpt":
        return COMPLETION, "trained by continued pre-training on raw text: prompted as plain text"
    if stage is not None:
        return CHAT, "fine-tuned on conversations in its chat template"
    if template not in (None, "auto"):
        return CHAT, f"forge.yaml's chat template ({template})"
    if base_weights:
        return COMPLETION, "base weights, not instruction-tuned: prompted as plain text"
    if own_template is False:
        return COMPLETION, "its tokenizer has no chat template and forge.yaml sets none: prompted as plain text"
    return CHAT, "its tokenizer's chat template"


def folder_has_template(folder: Path | None) -> bool | None:
    """Whether a model folder's tokenizer carries a chat template, read from its files (no tokenizer load)."""
    import json

    if folder is None or not (folder / "tokenizer_config.json").is_file():
        return None
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return bool(isinstance(config, dict) and config.get("chat_template"))


def _mtime(path: Path) -> int:
    try:
        return int(path.stat().st_mtime)
    except OSError:
        return 0


# ------------------------------------------------------------------------------------------------ entries


def _progressless(_message: str) -> None:
    """Loading messages have no terminal to go to on a server."""


def _base_entry(project_dir: Path, config: Any, engine: str) -> ModelEntry:
    from forgellm.inference.model_choice import base_choice
    from forgellm.models.resolve import resolve_model

    ref = config.model.ref
    base_weights, folder = False, None
    try:
        source = resolve_model(ref)
        spec, hub_id = source.spec, source.hub_id
        base_weights = bool(spec and spec.base_id and hub_id and hub_id.lower() == spec.base_id.lower())
        folder = source.path if source.path is not None and source.path.is_dir() else None
    except ForgeError:  # an unknown or moved model: listed all the same; loading it says what is wrong
        pass
    mode, why = detect_mode(
        stage=None, template=config.model.chat_template.name, own_template=folder_has_template(folder),
        base_weights=base_weights,
    )  # fmt: skip
    return ModelEntry(
        "base", f"base {ref}", "base", mode, why,
        lambda: base_choice(project_dir, engine, _progressless, config),
        _mtime(project_dir / "forge.yaml"),
    )  # fmt: skip


def _run_entries(project_dir: Path, engine: str) -> list[ModelEntry]:
    """Runs that saved a best checkpoint, oldest first."""
    from forgellm.inference.model_choice import run_choice
    from forgellm.project.run_record import RunRecord
    from forgellm.training.runs import list_runs

    entries = []
    for run_dir in list_runs(project_dir):
        record = RunRecord.load(run_dir)
        if record.best is None:
            continue
        mode, why = detect_mode(stage=_run_stage(record), template=None, own_template=None)
        run_id = record.run_id
        status = f", {record.status}" if record.status and record.status != "completed" else ""
        entries.append(
            ModelEntry(
                f"run:{run_id}",
                f"run {run_id} (best{status})",
                "run",
                mode,
                why,
                lambda run_id=run_id: run_choice(project_dir, engine, _progressless, run_id),
                _mtime(record.best),
            )
        )
    return entries


def _run_stage(record: Any) -> str:
    """The training stage of a run, from its config snapshot."""
    try:
        return str(record.load_config().training.stage)
    except ForgeError:  # a damaged snapshot: loading the run will say so
        return "sft"


def _export_stage(meta: Any) -> str:
    """The training stage of an export (older metadata has it only in the run's config snapshot)."""
    training = meta.config.get("training") if isinstance(meta.config, dict) else None
    stage = meta.stage or (training.get("stage") if isinstance(training, dict) else None)
    return str(stage or "sft")


def _export_entries(project_dir: Path, engine: str) -> list[ModelEntry]:
    from forgellm.inference.model_choice import path_choice
    from forgellm.project.export_record import ExportMetadata, export_folders
    from forgellm.project.layout import ProjectLayout

    entries = []
    for export in sorted(export_folders(ProjectLayout(project_dir)), key=lambda e: e.name):
        meta = ExportMetadata.load(export)
        if meta is None:
            continue
        mode, why = detect_mode(stage=_export_stage(meta), template=None, own_template=None)
        entries.append(
            ModelEntry(
                f"export:{export.name}",
                f"export {export.name}",
                "export",
                mode,
                why,
                lambda folder=export.folder: path_choice(project_dir, str(folder), engine, _progressless),
                _mtime(export.metadata),
            )
        )
    return entries


def _entry_of_choice(choice: ModelChoice, ref: str | None, project_dir: Path | None) -> ModelEntry:
    """The entry for a model already chosen (`forge serve MODEL`): its id, and its mode from the run or
    export its weights belong to, else from its tokenizer and forge.yaml."""
    from forgellm.project.export_record import ExportMetadata
    from forgellm.project.layout import ExportLayout, RunLayout
    from forgellm.project.run_record import RunRecord
    from forgellm.templates.detect import tokenizer_chat_template

    weights = choice.adapter_dir or choice.model_dir or choice.gguf_path
    stage, model_id = None, None
    for folder in (weights.parent, weights.parent.parent) if weights is not None else ():
        if RunLayout(folder).spec.is_file():  # runs/<id>/best or runs/<id>/checkpoints/step-N
            record = RunRecord.load(folder)
            stage, model_id = _run_stage(record), f"run:{record.run_id}"
            break
        meta = ExportMetadata.load(folder) if ExportLayout(folder).metadata.is_file() else None
        if meta is not None:
            stage, model_id = _export_stage(meta), f"export:{folder.name}"
            break
    template = None
    if stage is None and project_dir is not None and choice.kind in ("base", "path"):
        from forgellm.config.io import load_config

        template = load_config(project_dir).config.model.chat_template.name
    if model_id is None:
        model_id = "base" if choice.kind == "base" else Path(ref or choice.name).name or choice.name
    own = tokenizer_chat_template(choice.tokenizer) is not None
    mode, why = detect_mode(stage=stage, template=template, own_template=own)
    return ModelEntry(model_id, choice.name, choice.kind, mode, why, lambda: choice, int(time.time()))


# ------------------------------------------------------------------------------------------------ the host


@dataclass(frozen=True)
class ModelStatus:
    """An entry with its state on this server right now."""

    entry: ModelEntry
    loaded: bool
    error: ForgeError | None  # the last load failure, while it is remembered


class ModelHost:
    """The models a server offers, loaded on first use, one generation at a time (see the module's doc)."""

    def __init__(
        self,
        entries: list[ModelEntry],
        *,
        engine: str = "auto",
        max_loaded: int = MAX_LOADED,
        scan: Callable[[], list[ModelEntry]] | None = None,
    ) -> None:
        if not entries:
            raise ForgeError(
                "There is no model to serve.",
                fix="Train or export a model first (`forge train`, `forge export`), or name one: `forge serve PATH`.",
                code=ErrorCode.NO_TRAINING_RUN,
            )
        self._entries = {entry.id: entry for entry in entries}
        self.engine = engine
        self.max_loaded = max(1, max_loaded)
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._failed: dict[str, tuple[float, ForgeError]] = {}
        self._state = threading.Lock()  # _loaded/_failed are changed by the worker, read by the event loop
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forge-model")
        self._scan = scan  # finds the entries again (a project's runs and exports change while it serves)
        self._running: threading.Event | None = None  # the cancel event of the generation in progress

    @classmethod
    def for_project(cls, project_dir: Path, *, engine: str = "auto", config: Any = None) -> ModelHost:
        """Every model of the project: the base model, each run with best weights, each export."""
        from forgellm.config.io import load_config

        def scan(config: Any = None) -> list[ModelEntry]:
            config = config if config is not None else load_config(project_dir).config
            entries = [_base_entry(project_dir, config, engine), *_run_entries(project_dir, engine)]
            return [*entries, *_export_entries(project_dir, engine)]

        return cls(scan(config), engine=engine, scan=scan)

    @classmethod
    def for_model(cls, ref: str | None, project_dir: Path | None, *, engine: str = "auto") -> ModelHost:
        """One model, as `forge inference --model` takes it (export|run|base|PATH; None: the newest export,
        else the newest run, else the base model). Its tokenizer is read now, so a wrong name fails at start."""
        from forgellm.inference.model_choice import choose_model

        choice = choose_model(project_dir, ref, engine=engine)
        return cls([_entry_of_choice(choice, ref, project_dir)], engine=engine)

    # ---------------------------------------------------------------------------------------- lookups

    @property
    def entries(self) -> list[ModelEntry]:
        return list(self._entries.values())

    def refresh(self) -> None:
        """Find the models again (a project host: runs and exports finished since appear, deleted ones go)."""
        if self._scan is None:
            return
        try:
            entries = self._scan()
        except ForgeError:  # forge.yaml unreadable for a moment (being saved): keep the models known
            return
        if entries:
            self._entries = {entry.id: entry for entry in entries}

    def entry(self, model_id: str) -> ModelEntry:
        if model_id not in self._entries:
            self.refresh()
        if model_id in self._entries:
            return self._entries[model_id]
        raise ForgeError(
            f"The model '{model_id}' does not exist on this server.",
            fix=f"Use one of: {', '.join(self._entries)} (GET /v1/models lists them).",
            code=ErrorCode.MODEL_NOT_SERVED,
            data={"model": model_id},
        )

    def status(self) -> list[ModelStatus]:
        """Every model (found again first) with whether it is loaded and its last load failure."""
        self.refresh()
        with self._state:
            return [ModelStatus(e, e.id in self._loaded, self._recent_failure(e.id)) for e in self._entries.values()]

    def _recent_failure(self, model_id: str) -> ForgeError | None:
        """The model's last load failure while it is remembered (callers hold `_state`)."""
        failed = self._failed.get(model_id)
        return failed[1] if failed is not None and time.monotonic() - failed[0] < RETRY_LOAD_AFTER_S else None

    # ---------------------------------------------------------------------------------------- the worker

    def _load(self, entry: ModelEntry) -> LoadedModel:
        """The entry's engine, loading it (and unloading the least recently used) when needed. Worker only."""
        from forgellm.inference.model_choice import open_engine

        with self._state:
            if entry.id in self._loaded:
                self._loaded.move_to_end(entry.id)
                return self._loaded[entry.id]
            failed = self._recent_failure(entry.id)
            if failed is not None:
                raise failed
            evicted = False
            while len(self._loaded) >= self.max_loaded:  # unload first: never more than max_loaded in memory
                self._loaded.popitem(last=False)
                evicted = True
        if evicted:
            gc.collect()
        try:
            choice = entry.choose()
            loaded = LoadedModel(choice, open_engine(choice, self.engine, _progressless))
        except Exception as exc:  # ForgeError or a library's: one code for every model that does not load
            error = _load_failure(entry, exc)
            with self._state:
                self._failed[entry.id] = (time.monotonic(), error)
            raise error from None
        with self._state:
            self._failed.pop(entry.id, None)
            self._loaded[entry.id] = loaded
        return loaded

    def _work(self, entry: ModelEntry, request: GenerationRequest, put: Callable[[Any], None], cancel: Any) -> None:
        if cancel.is_set():  # the client left while this request waited its turn
            return
        self._running = cancel
        try:
            run_generation(self._load(entry), request, put, cancel)
        except ForgeError as error:
            put(error)
        except Exception as exc:  # a library's failure mid-generation: the client gets its text, not a 500 page
            put(
                ForgeError(
                    f"Generating with {entry.name} failed ({type(exc).__name__}: {str(exc)[:300]}).",
                    fix="Try again; if it keeps failing, try `forge inference --model ...` to see the whole error.",
                    code=ErrorCode.GENERATION_FAILED,
                    data={"cause": cause(exc)},
                )
            )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | Finished]:
        """The answer's text pieces as they come, then one `Finished`. Raises ForgeError (unknown model,
        a model that does not load, a prompt it cannot take). Leaving the loop early stops the generation."""
        entry = self.entry(request.model)
        if request.messages is not None and entry.mode == COMPLETION:
            raise ForgeError(
                f"{entry.name} is a completion model ({entry.mode_reason}); it has no chat template to "
                "render messages with.",
                fix="Send a plain-text prompt to /v1/completions instead.",
                code=ErrorCode.USAGE_INVALID,
                data={"model": entry.id},
            )
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(items.put_nowait, item)
            except RuntimeError:  # the server's loop closed (shutdown): nobody is listening
                cancel.set()

        loop.run_in_executor(self._worker, self._work, entry, request, put, cancel)
        try:
            while True:
                item = await items.get()
                if isinstance(item, ForgeError):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            cancel.set()  # the client went away (or the answer is complete): free the worker

    def close(self) -> None:
        """Stop the generation in progress and the worker, drop the queued requests and the loaded models."""
        self._worker.shutdown(wait=False, cancel_futures=True)
        if self._running is not None:
            self._running.set()
        with self._state:
            self._loaded.clear()


def _load_failure(entry: ModelEntry, exc: Exception) -> ForgeError:
    if isinstance(exc, ForgeError):
        return ForgeError(
            f"{entry.name} could not be loaded: {exc.message}",
            fix=exc.fix,
            code=ErrorCode.MODEL_LOAD_FAILED,
            data={**exc.data, "model": entry.id, "reason": exc.code.value},
        )
    return ForgeError(
        f"{entry.name} could not be loaded ({type(exc).__name__}: {str(exc)[:300]}).",
        fix="Check the model's files (`forge inference --model ...` loads it the same way); the other models "
        "of this server still answer.",
        code=ErrorCode.MODEL_LOAD_FAILED,
        data={"cause": cause(exc), "model": entry.id},
    )
