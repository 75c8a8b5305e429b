"""`--model export|run|base|PATH` -> the weights to load and the chat format to render prompts with.

The chat format is always the one the model was trained with: forge.yaml's template settings (a run's
own config snapshot for a run), an export's metadata.json `chat_template` over its merged/ tokenizer, or,
for a model outside any project, the model's own tokenizer template ('auto').
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgellm.config.schema import ChatTemplateSection
from forgellm.errors import ErrorCode, ForgeError, cause
from forgellm.files import read_json_object
from forgellm.project.export_record import ExportMetadata
from forgellm.project.export_record import newest_export as newest_export_layout
from forgellm.project.layout import ExportLayout, ProjectLayout

if TYPE_CHECKING:
    from forgellm.export.source import ExportSource
    from forgellm.inference.engines import InferenceEngine
    from forgellm.templates.messages import ChatFormat

KEYWORDS = ("export", "run", "base")
ENGINES = ("auto", "transformers", "llama.cpp")
ADAPTER_CONFIG = "adapter_config.json"
DEFAULT_N_CTX = 4096
Progress = Callable[[str], None]


@dataclass
class ModelChoice:
    """One model to talk to: its weights (HF folder, base + adapter, or GGUF) and its chat format."""

    kind: str  # export | run | base | path
    name: str  # how the user sees it, e.g. "export support-bot"
    chat_format: ChatFormat
    tokenizer: Any
    model_dir: Path | None = None  # a full HF folder, or the base under `adapter_dir`
    adapter_dir: Path | None = None  # a peft LoRA adapter folder
    gguf_path: Path | None = None  # a .gguf file for llama.cpp
    num_ctx: int | None = None
    note: str | None = None  # why this model was picked when --model was not given


def _model_name(ref: str | None) -> str | None:
    """A model reference's hub id where known: 'auto' template detection looks at names."""
    if not ref:
        return None
    from forgellm.models.resolve import resolve_model

    try:
        return resolve_model(ref).hub_id or ref
    except ForgeError:  # a folder that moved since: its name still says something
        return ref


def build_format(
    tokenizer_source: Path | Any, settings: ChatTemplateSection, *, base_dir: Path, model_name: str | None
) -> tuple[Any, ChatFormat]:
    """(tokenizer, chat format) from a model folder (or a loaded tokenizer) and template settings."""
    from forgellm.models.loading import chat_format_for, load_tokenizer, read_model_config

    if isinstance(tokenizer_source, Path):
        tokenizer, config = load_tokenizer(tokenizer_source), read_model_config(tokenizer_source)
    else:
        tokenizer, config = tokenizer_source, {}
    chat_format = chat_format_for(settings, tokenizer, base_dir=base_dir, model_name=model_name, model_config=config)
    return tokenizer, chat_format


def _project_config(project_dir: Path) -> Any:
    """forge.yaml, for a caller that did not hand its config (`forge inference` and eval hand theirs)."""
    from forgellm.config.io import load_config

    return load_config(project_dir).config


# ------------------------------------------------------------------------------------------------ choices


def choose_model(
    project_dir: Path | None,
    model: str | None,
    *,
    engine: str = "auto",
    progress: Progress | None = None,
    config: Any = None,
) -> ModelChoice:
    """Resolve `--model` (None = the newest export, else the newest run, else the base model). `config`:
    the project's forge.yaml as the command loaded it (None reads it where needed)."""
    step = progress or (lambda _message: None)
    if model is None or model in KEYWORDS:
        if project_dir is None:
            raise ForgeError(
                "There is no Forge project here (no forge.yaml in this folder or above), so there is no "
                + (f"'{model}' model to load." if model else "fine-tuned or base model to pick."),
                fix="Run this inside your project (or pass --project DIR), or name a model: "
                "--model PATH (a model folder, LoRA adapter or .gguf) or a name from `forge models`.",
                code=ErrorCode.PROJECT_NOT_FOUND,
            )
        if model is None:
            return _default_choice(project_dir, engine, step, config)
        if model == "base":
            return base_choice(project_dir, engine, step, config)
        return {"export": export_choice, "run": run_choice}[model](project_dir, engine, step)
    return path_choice(project_dir, model, engine, step, config)


def _default_choice(project_dir: Path, engine: str, step: Progress, config: Any = None) -> ModelChoice:
    from forgellm.training.runs import list_runs

    if newest_export(project_dir) is not None:
        choice = export_choice(project_dir, engine, step)
        newest = choice.name.removeprefix("export ")
        choice.note = f"Using the newest export, {newest} (--model run|base|PATH for others)."
    elif list_runs(project_dir):
        choice = run_choice(project_dir, engine, step)
        choice.note = f"No export yet: using the newest training run, {choice.name.removeprefix('run ')}."
    else:
        choice = base_choice(project_dir, engine, step, config)
        base = choice.name.removeprefix("base ")
        choice.note = f"Nothing trained yet: using the base model, {base}. Fine-tune it with `forge train`."
    return choice


def newest_export(project_dir: Path) -> Path | None:
    export = newest_export_layout(ProjectLayout(project_dir))
    return export.folder if export is not None else None


def export_choice(project_dir: Path, engine: str, step: Progress) -> ModelChoice:
    folder = newest_export(project_dir)
    if folder is None:
        raise ForgeError(
            f"This project has no export yet ({ProjectLayout(project_dir).exports_dir} holds no finished export).",
            fix="Export your trained model with `forge export` (after `forge train`), or talk to the training "
            "run directly with --model run.",
            code=ErrorCode.EXPORT_MISSING,
        )
    return _export_folder_choice(folder, engine, step, project_dir)


def _export_folder_choice(
    folder: Path, engine: str, step: Progress, project_dir: Path | None, gguf: Path | None = None
) -> ModelChoice:
    meta = ExportMetadata.load(folder) or ExportMetadata()  # damaged: what the files alone tell
    try:
        settings = ChatTemplateSection.model_validate(meta.chat_template)
    except ValueError as exc:
        raise ForgeError(
            f"{ExportLayout(folder).metadata} has an invalid chat_template section ({exc}).",
            fix="The export is damaged: export again with `forge export`.",
            code=ErrorCode.EXPORT_MISSING,
        ) from None
    merged = folder / meta.files.merged
    merged = merged if (merged / "config.json").is_file() else None
    ggufs = [folder / name for name in meta.files.gguf.values() if (folder / name).is_file()]
    if gguf is None and (engine == "llama.cpp" or merged is None):
        gguf = _preferred_gguf(ggufs, folder)
    step(f"Loading the tokenizer of export {folder.name}")
    source = merged if merged is not None else _gguf_tokenizer(gguf)  # type: ignore[arg-type]
    model_name = meta.base_model_hub_id or _model_name(meta.base_model)
    tokenizer, chat_format = build_format(source, settings, base_dir=project_dir or folder, model_name=model_name)
    return ModelChoice("export", f"export {folder.name}", chat_format, tokenizer, merged, None, gguf, meta.num_ctx)


def _preferred_gguf(ggufs: list[Path], folder: Path) -> Path:
    if not ggufs:
        raise ForgeError(
            f"Export {folder.name} has no GGUF file, which the llama.cpp engine needs.",
            fix="Export again with GGUF files (`forge export`), or use --engine transformers.",
            code=ErrorCode.EXPORT_MISSING,
        )
    q8 = [p for p in ggufs if p.stem.lower().endswith("q8_0")]  # what the Modelfile uses by default
    return (q8 or ggufs)[0]


def run_choice(project_dir: Path, engine: str, step: Progress, run: str | None = None) -> ModelChoice:
    """A run's weights (`run` = id or folder; default the newest completed run) and its chat format."""
    from forgellm.export.source import find_export_source
    from forgellm.training.runs import list_runs

    if not list_runs(project_dir):
        raise ForgeError(
            "This project has no training run yet, so there is no fine-tuned model to talk to.",
            fix="Train one with `forge train` (after `forge plan` and `forge prepare FILE`), or talk to the "
            "base model with --model base.",
            code=ErrorCode.NO_TRAINING_RUN,
        )
    _refuse_llama_cpp(engine, "A training run's weights are a Hugging Face model")
    return source_choice(find_export_source(project_dir, run), project_dir, step)  # best/, else its last checkpoint


def source_choice(source: ExportSource, project_dir: Path, step: Progress) -> ModelChoice:
    """A run's weights, found already (eval hands the run training recorded), and its chat format."""
    step(f"Loading the tokenizer of run {source.run_id}")
    settings = source.config.model.chat_template  # what this run trained with
    tokenizer, chat_format = build_format(
        source.base_model_dir, settings, base_dir=project_dir, model_name=_model_name(source.config.model.ref)
    )
    name = f"run {source.run_id} ({source.checkpoint})"
    if source.is_adapter:
        return ModelChoice("run", name, chat_format, tokenizer, source.base_model_dir, source.weights_dir)
    return ModelChoice("run", name, chat_format, tokenizer, source.weights_dir)


def _refuse_llama_cpp(engine: str, what: str) -> None:
    if engine == "llama.cpp":
        raise ForgeError(
            f"{what}; the llama.cpp engine needs a .gguf file.",
            fix="Export it first (`forge export` writes GGUF files), then use --model export; "
            "or use --engine transformers.",
            code=ErrorCode.EXPORT_MISSING,
        )


def base_choice(project_dir: Path, engine: str, step: Progress, config: Any = None) -> ModelChoice:
    """forge.yaml's model (`config`: forge.yaml as the caller loaded it; None reads it)."""
    from forgellm.models.loading import chat_setup

    config = config if config is not None else _project_config(project_dir)
    step(f"Preparing the base model {config.model.ref}")
    setup = chat_setup(config.model.ref, config.model.chat_template, base_dir=project_dir, progress=step)
    gguf = setup.source.path if setup.source.kind in ("bundled", "gguf") else None
    if gguf is None:
        _refuse_llama_cpp(engine, f"The base model {config.model.ref} is a Hugging Face model")
    return ModelChoice(
        "base", f"base {config.model.ref}", setup.chat_format, setup.tokenizer, setup.model_dir, None, gguf
    )


# ------------------------------------------------------------------------------------------------ paths


def path_choice(project_dir: Path | None, ref: str, engine: str, step: Progress, config: Any = None) -> ModelChoice:
    """A folder (model, adapter or export), a .gguf file, or a model name from `forge models`."""
    path = Path(ref).expanduser()
    if not path.exists():
        looks_like_path = ref.startswith((".", "/", "~")) or ("/" in ref and path.parent.is_dir())
        if ref.lower().endswith(".gguf") or looks_like_path:
            raise ForgeError(
                f"No such file or folder: {ref}.",
                fix="Check the path, or use --model export|run|base in a project.",
                code=ErrorCode.FILE_NOT_FOUND, data={"path": ref},
            )
        return _named_model_choice(ref, engine, step)
    path = path.absolute()  # not resolve(): merged/ of an export may be a link, and its parent matters
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ForgeError(
                f"{ref} is a file but not a .gguf model.",
                fix="Pass a .gguf file, a model folder (config.json), a LoRA adapter folder (adapter_config.json) "
                "or an export folder.",
                code=ErrorCode.MODEL_PATH_INVALID,
            )
        return _gguf_choice(project_dir, path, engine, step)
    export = ExportLayout(path)
    if export.metadata.is_file() and (export.merged.is_dir() or any(path.glob("*.gguf"))):
        return _export_folder_choice(path, engine, step, project_dir)
    if (path / ADAPTER_CONFIG).is_file():
        return _adapter_choice(project_dir, path, engine, step, config)
    if (path / "config.json").is_file():
        return _folder_choice(project_dir, path, engine, step, config)
    raise ForgeError(
        f"{ref} is a folder but not a model: it has no config.json (a model), adapter_config.json "
        "(a LoRA adapter) or metadata.json (a Forge export).",
        fix="Point to the folder that holds the model's files, e.g. runs/<id>/best or exports/<name>.",
        code=ErrorCode.MODEL_PATH_INVALID,
    )


def _settings_here(project_dir: Path | None, config: Any = None) -> tuple[ChatTemplateSection, str | None]:
    """forge.yaml's template settings inside a project; the model's own template ('auto') outside."""
    if project_dir is None:
        return ChatTemplateSection(), None
    config = config if config is not None else _project_config(project_dir)
    return config.model.chat_template, _model_name(config.model.ref)


def _folder_choice(
    project_dir: Path | None, path: Path, engine: str, step: Progress, config: Any = None
) -> ModelChoice:
    _refuse_llama_cpp(engine, f"{path} is a Hugging Face model folder")
    export = ExportLayout(path.parent)
    if export.metadata.is_file() and path == export.merged:  # merged/ of an export: its metadata knows the template
        return _export_folder_choice(export.folder, "transformers", step, project_dir)
    settings, model_name = _settings_here(project_dir, config)
    step(f"Loading the tokenizer of {path.name}")
    tokenizer, chat_format = build_format(
        path, settings, base_dir=project_dir or path, model_name=model_name or path.name
    )
    return ModelChoice("path", str(path), chat_format, tokenizer, path)


def _adapter_choice(
    project_dir: Path | None, path: Path, engine: str, step: Progress, config: Any = None
) -> ModelChoice:
    _refuse_llama_cpp(engine, f"{path} is a LoRA adapter")
    adapter = read_json_object(path / ADAPTER_CONFIG)
    _check_adapter_files(path, adapter)
    named = Path(str(adapter.get("base_model_name_or_path") or "")).expanduser()
    if named.parts and (named / "config.json").is_file():
        base = named
    elif project_dir is not None:
        step("Preparing the project's base model for the adapter")
        base = base_choice(project_dir, "transformers", step, config).model_dir
    else:
        raise ForgeError(
            f"The adapter in {path} was trained on {named or 'an unnamed model'}, which is not on this machine.",
            fix="Run it inside the Forge project it was trained in (--project DIR), or use the exported model.",
            code=ErrorCode.MODEL_UNAVAILABLE,
        )
    settings, model_name = _settings_here(project_dir, config)
    step(f"Loading the tokenizer of {base.name}")  # type: ignore[union-attr]
    tokenizer, chat_format = build_format(base, settings, base_dir=project_dir or path, model_name=model_name)  # type: ignore[arg-type]
    return ModelChoice("path", f"{path} over {base}", chat_format, tokenizer, base, path)


def _check_adapter_files(path: Path, adapter: dict[str, Any]) -> None:
    weights = path / "adapter_model.safetensors"
    fix = "Point to a complete adapter folder (e.g. runs/<id>/best), or train again with `forge train`."
    if not adapter or not weights.is_file():
        missing = "adapter_config.json unreadable" if not adapter else "no adapter_model.safetensors"
        raise ForgeError(
            f"The LoRA adapter in {path} is incomplete or damaged ({missing}).", fix=fix, code=ErrorCode.WEIGHTS_DAMAGED
        )
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as handle:
            empty = not list(handle.keys())
    except Exception as exc:  # truncated or foreign files raise several kinds
        raise ForgeError(
            f"The adapter weights {weights} cannot be read ({type(exc).__name__}: {exc}); the file is damaged.",
            fix=fix,
            code=ErrorCode.WEIGHTS_DAMAGED,
            data={"cause": cause(exc)},
        ) from None
    if empty:
        raise ForgeError(f"The adapter weights {weights} hold no tensors.", fix=fix, code=ErrorCode.WEIGHTS_DAMAGED)


def _gguf_tokenizer(gguf: Path) -> Any:
    """The tokenizer (and chat template) stored in a GGUF, read by transformers."""
    import contextlib
    import io

    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # transformers draws a progress bar while reading
            return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:  # unreadable vocabularies take many forms
        raise ForgeError(
            f"Cannot read the tokenizer stored in {gguf} ({type(exc).__name__}: {str(exc)[:200]}).",
            fix="Use a GGUF written by llama.cpp tools or `forge export`, or an exported model folder.",
            code=ErrorCode.TOKENIZER_UNREADABLE,
            data={"cause": cause(exc)},
        ) from None


def _gguf_choice(project_dir: Path | None, gguf: Path, engine: str, step: Progress) -> ModelChoice:
    from forgellm.models.gguf_import import check_gguf

    check_gguf(gguf)
    if ExportLayout(gguf.parent).metadata.is_file():  # a GGUF of a Forge export: the metadata knows the template
        choice = _export_folder_choice(gguf.parent, engine, step, project_dir, gguf=gguf)
        if engine == "auto" and _llama_cpp_installed():  # the file asked for, not the merged/ folder beside it
            choice.model_dir = None
        return choice
    step(f"Reading the tokenizer stored in {gguf.name}")
    tokenizer, chat_format = build_format(
        _gguf_tokenizer(gguf), ChatTemplateSection(), base_dir=gguf.parent, model_name=gguf.stem
    )
    return ModelChoice("path", str(gguf), chat_format, tokenizer, None, None, gguf)


def _named_model_choice(ref: str, engine: str, step: Progress) -> ModelChoice:
    """A catalog alias or hub id (`forge models`), with the model's own chat template."""
    from forgellm.models.loading import chat_setup

    setup = chat_setup(ref, ChatTemplateSection(), progress=step)  # unknown names: the nearest catalog names
    gguf = setup.source.path if setup.source.kind in ("bundled", "gguf") else None
    if gguf is None:
        _refuse_llama_cpp(engine, f"{ref} is a Hugging Face model")
    return ModelChoice("path", ref, setup.chat_format, setup.tokenizer, setup.model_dir, None, gguf)


# ------------------------------------------------------------------------------------------------ engines


def engine_kind(choice: ModelChoice, engine: str) -> str:
    """auto: transformers where there is a Hugging Face folder, else llama.cpp (when installed) for a GGUF."""
    if engine not in ENGINES:
        raise ForgeError(
            f"Unknown engine {engine!r}.", fix=f"Use one of: {', '.join(ENGINES)}.", code=ErrorCode.USAGE_INVALID
        )
    if engine != "auto":
        return engine
    if choice.model_dir is not None:
        return "transformers"
    return "llama.cpp" if _llama_cpp_installed() else "transformers"


def _llama_cpp_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def open_engine(choice: ModelChoice, engine: str = "auto", progress: Progress | None = None) -> InferenceEngine:
    """Load the chosen model into the engine asked for."""
    from forgellm.inference.engines import LlamaCppEngine, TransformersEngine

    step = progress or (lambda _message: None)
    kind = engine_kind(choice, engine)
    if kind == "llama.cpp":
        if choice.gguf_path is None:
            _refuse_llama_cpp("llama.cpp", f"{choice.name} has no GGUF file")
        step(f"Loading {choice.gguf_path.name} into llama.cpp")  # type: ignore[union-attr]
        n_ctx = choice.num_ctx or DEFAULT_N_CTX
        return LlamaCppEngine.load(choice.gguf_path, choice.chat_format, choice.name, n_ctx=n_ctx)  # type: ignore[arg-type]
    model_dir = choice.model_dir
    if model_dir is None:  # a bare GGUF without llama.cpp: transformers reads it once into a cached folder
        from forgellm.models.resolve import materialize, resolve_model

        step(f"Converting {choice.gguf_path.name} for transformers (once; cached)")  # type: ignore[union-attr]
        model_dir = materialize(resolve_model(str(choice.gguf_path)), step)
    step(f"Loading the weights of {choice.name}")
    return TransformersEngine.load(
        model_dir, choice.tokenizer, choice.chat_format, choice.name, adapter_dir=choice.adapter_dir
    )


def open_compare_engines(
    project_dir: Path | None,
    choice: ModelChoice,
    engine: str = "auto",
    progress: Progress | None = None,
    config: Any = None,
) -> tuple[InferenceEngine, InferenceEngine]:
    """(base, fine-tuned) engines. When the fine-tuned model is base + adapter, the base is the same weights
    with the adapter switched off (one copy in memory); else forge.yaml's model is loaded beside it."""
    if project_dir is None:
        raise ForgeError(
            "--compare needs a Forge project: the base model is forge.yaml's model.",
            fix="Run it inside your project (or pass --project DIR).",
            code=ErrorCode.PROJECT_NOT_FOUND,
        )
    if choice.kind == "base":
        raise ForgeError(
            "--compare shows the base model beside a fine-tuned one, and this project has no fine-tuned "
            "model yet (no export and no training run).",
            fix="Fine-tune first with `forge train`, or drop --compare to talk to the base model.",
            code=ErrorCode.NO_TRAINING_RUN,
        )
    step = progress or (lambda _message: None)
    tuned = open_engine(choice, engine, step)
    config = config if config is not None else _project_config(project_dir)  # eval hands its own
    ref = config.model.ref
    if tuned.has_adapter:
        return tuned.without_adapter(f"base {ref}"), tuned
    base = base_choice(project_dir, "auto", step, config)
    wanted = engine if engine != "llama.cpp" or base.gguf_path is not None else "transformers"
    return open_engine(base, wanted, step), tuned
