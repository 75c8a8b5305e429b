"""`forge export`: a run's weights -> exports/<name>/ (merged HF folder, GGUF files, Modelfile, model card,
metadata), then Ollama registration when a server answers.

Everything is checked before heavy work starts (the run and its weights, the architecture's GGUF support,
the quantizer for K-quants, free disk space). The export is built in a hidden partial folder beside
exports/<name>/ and renamed into place when complete, so an interrupted or failed export (disk full
included) never leaves half a model where a user or Ollama would pick it up.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgellm.errors import ErrorCode, ForgeError, cause
from forgellm.export.card import (
    ExportFacts,
    build_card,
    build_metadata,
    catalog_entry,
    eval_report,
    prepared_stats,
)
from forgellm.export.source import ExportSource, find_export_source, training_chat_setup
from forgellm.hardware.disk import bytes_per_param, require_free_space
from forgellm.models.dims import context_length_or_default
from forgellm.project.export_record import ExportMetadata, OllamaRecord
from forgellm.project.layout import ExportLayout, ProjectLayout, RunLayout
from forgellm.project.lock import locked

if TYPE_CHECKING:
    from forgellm.config.schema import ForgeConfig
    from forgellm.project.run_record import RunRecord
    from forgellm.templates.messages import ChatFormat

DEFAULT_QUANTS = ("f16", "q8_0")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_DISK_MARGIN = 1.1


@dataclass
class ExportProgress:
    """Callbacks the CLI renders: a stage line, and a bar while tensors are converted."""

    stage: Callable[[str], None] = lambda _message: None
    tensors: Callable[[str, int, int], None] = lambda _label, _done, _total: None


@dataclass
class BuiltExport:
    """What building an export decided, for publishing it and registering it with Ollama."""

    metadata: ExportMetadata
    gguf: dict[str, str]  # quant -> file name
    modelfile: str | None  # the Modelfile's name; None when none could be written
    template: str | None  # the Ollama Go template of the Modelfile
    modelfile_gguf: str | None  # the GGUF the Modelfile (and Ollama) uses
    system: str | None
    stop: list[str]
    num_ctx: int
    warnings: list[str]


@dataclass
class ExportResult:
    name: str
    folder: Path
    run_id: str
    checkpoint: str
    merged_dir: Path
    gguf_files: dict[str, Path]
    modelfile: Path | None
    card: Path
    metadata: Path
    ollama: OllamaRecord
    seconds_by_stage: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    replaced: bool = False
    hub_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "folder": str(self.folder),
            "run_id": self.run_id,
            "checkpoint": self.checkpoint,
            "merged": str(self.merged_dir),
            "gguf": {q: str(p) for q, p in self.gguf_files.items()},
            "modelfile": str(self.modelfile) if self.modelfile else None,
            "card": str(self.card),
            "metadata": str(self.metadata),
            "ollama": self.ollama.to_dict(),
            "seconds_by_stage": self.seconds_by_stage,
            "warnings": self.warnings,
            "replaced": self.replaced,
            "hub_url": self.hub_url,
        }


def export_name(config: Any, name: str | None) -> str:
    """The export's folder and Ollama model name: --name, else export.ollama_name, else the project name."""
    chosen = name or config.export.ollama_name or config.project.name
    slug = re.sub(r"[^a-z0-9._-]+", "-", chosen.lower()).strip("-._")
    if name is not None and slug != name:
        raise ForgeError(
            f"--name {name!r} is not a valid model name (lower-case letters, digits, '.', '_', '-').",
            fix=f"Use --name {slug or 'my-model'}.",
            code=ErrorCode.USAGE_INVALID,
        )
    if not _NAME.match(slug):
        slug = "my-model"
    return slug


def _resolve_quants(config: Any, quants: list[str] | None) -> tuple[list[str], bool]:
    """The GGUF types to write; True when the user chose them (the Modelfile then uses the first)."""
    from forgellm.export.gguf_convert import K_QUANTS, NATIVE_QUANTS

    chosen = quants if quants is not None else list(config.export.quantizations or DEFAULT_QUANTS)
    valid = (*NATIVE_QUANTS, *K_QUANTS)
    unknown = [q for q in chosen if q not in valid]
    if unknown:
        raise ForgeError(
            f"Unknown GGUF type(s): {', '.join(unknown)}.",
            fix=f"Use some of: {', '.join(valid)}.",
            code=ErrorCode.USAGE_INVALID,
        )
    needs_llama = [q for q in chosen if q in K_QUANTS]
    if needs_llama and importlib.util.find_spec("llama_cpp") is None:
        from forgellm.export.quantize import LLAMA_CPP_INSTALL

        raise ForgeError(
            f"{', '.join(needs_llama)} needs llama.cpp's quantizer (llama-cpp-python), which is not installed; "
            f"F16, BF16 and Q8_0 need nothing extra.",
            fix=f"Install it ({LLAMA_CPP_INSTALL}), or export with --quant f16,q8_0"
            + (" (and set export.quantizations in forge.yaml)." if quants is None else "."),
            code=ErrorCode.DEPENDENCY_MISSING,
            data={"package": "llama-cpp-python"},
        )
    return list(dict.fromkeys(chosen)), quants is not None


def _weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def _check_disk(exports: Path, base_dir: Path, base_config: dict[str, Any], quants: list[str]) -> None:
    base_bytes = _weights_bytes(base_dir)
    params = base_bytes / bytes_per_param(base_config.get("dtype") or base_config.get("torch_dtype"))
    needed = base_bytes + sum(bytes_per_param(q, default="f16") * params for q in quants)
    if any(q not in ("f32", "f16", "bf16", "q8_0") for q in quants) and "f16" not in quants:
        needed += bytes_per_param("f16") * params  # the temporary F16 the quantizer reads
    fix = "Free some space, or export fewer GGUF types (e.g. --quant q8_0)."
    require_free_space(exports, needed * _DISK_MARGIN, "this export", fix)


def _num_ctx(config: Any, base_config: dict[str, Any]) -> int:
    # Ollama's num_ctx: room for a conversation (at least 2048) within what the model was trained for.
    return min(context_length_or_default(base_config), max(2048, config.model.max_length))


def _modelfile_gguf(gguf_files: dict[str, str], user_chose: bool) -> str | None:
    if not gguf_files:
        return None
    if not user_chose and "q8_0" in gguf_files:
        return gguf_files["q8_0"]
    return next(iter(gguf_files.values()))


class _Timer:
    def __init__(self, progress: ExportProgress) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}

    def run(self, key: str, message: str, work: Callable[[], Any]) -> Any:
        self.progress.stage(message)
        started = time.perf_counter()
        try:
            return work()
        finally:
            self.seconds[key] = round(self.seconds.get(key, 0.0) + time.perf_counter() - started, 2)


@dataclass(frozen=True)
class _ExportJob:
    """What one export writes, decided before anything is written."""

    name: str
    source: ExportSource
    project_config: ForgeConfig  # forge.yaml as the caller loaded it (export settings, Ollama name)
    base_config: dict[str, Any]  # the base model's config.json
    architecture: str
    quants: list[str]
    user_chose: bool  # the GGUF types came from --quant, not from forge.yaml's defaults


@locked("export")
def export_model(
    layout: ProjectLayout,
    config: ForgeConfig,
    *,
    run: str | RunRecord | None = None,
    quants: list[str] | None = None,
    name: str | None = None,
    ollama: bool = True,
    push_to_hub: str | None = None,
    progress: ExportProgress | None = None,
    environ: dict[str, str] | None = None,
) -> ExportResult:
    """Export a run of the project (`run`: its record as training handed it, its id or folder; default the
    newest completed run) with `config`, forge.yaml as the caller loaded it (see the module docstring)."""
    from forgellm.export.gguf_convert import check_exportable
    from forgellm.models.loading import read_model_config

    progress = progress or ExportProgress()
    environ = dict(os.environ) if environ is None else environ
    layout = ProjectLayout(layout.root.resolve())
    source = find_export_source(layout.root, run)
    name = export_name(config, name)
    chosen, user_chose = _resolve_quants(config, quants)
    base_config = read_model_config(source.base_model_dir)
    architecture = check_exportable(base_config) if chosen else str(base_config.get("model_type", "?"))
    job = _ExportJob(name, source, config, base_config, architecture, chosen, user_chose)
    exports = layout.exports_dir
    exports.mkdir(parents=True, exist_ok=True)
    _check_disk(exports, source.base_model_dir, base_config, chosen)

    timer = _Timer(progress)
    partial = exports / f".{name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        built = _build(partial, job, timer, progress)
        final = layout.export(name).folder
        replaced = final.exists()
        timer.run("publish", f"Publishing exports/{name}/", lambda: _publish(partial, final))
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise _os_error(exc, exports) from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    result = _result(final, name, source, built, timer, replaced)
    if ollama and result.modelfile is not None:
        result.ollama = _register(result, built, environ, timer)
    if push_to_hub:
        from forgellm.export.hub import push_export

        result.hub_url = timer.run(
            "hub",
            f"Uploading to the Hugging Face Hub ({push_to_hub})",
            lambda: push_export(final, push_to_hub, environ=environ),
        )
    built.metadata.ollama, built.metadata.hub_url = result.ollama, result.hub_url
    built.metadata.save(ExportLayout(final))
    return result


def _build(partial: Path, job: _ExportJob, timer: _Timer, progress: ExportProgress) -> BuiltExport:
    from forgellm.export.merge import write_merged
    from forgellm.export.modelfile import stop_strings
    from forgellm.export.ollama import create_command

    name, source, user_chose = job.name, job.source, job.user_chose
    partial.mkdir(parents=True)
    # The template the run's data was rendered with, never a since-edited one (see training_chat_setup).
    setup = timer.run("load", "Loading the tokenizer and chat template", lambda: training_chat_setup(source))
    chat_format = setup.chat_format
    merged_dir = ExportLayout(partial).merged
    merged = timer.run(
        "merge",
        "Merging the adapter into the base model" if source.is_adapter else "Copying the fully trained weights",
        lambda: write_merged(source, chat_format, setup.tokenizer, merged_dir),
    )
    warnings = list(setup.warnings)
    gguf_files = _write_ggufs(partial, name, merged_dir, job.quants, chat_format, setup.tokenizer, timer, progress)
    stop = stop_strings(chat_format)
    num_ctx = _num_ctx(source.config, job.base_config)
    system = job.project_config.export.system_prompt or chat_format.system_prompt
    modelfile_name, template = _write_modelfile(partial, gguf_files, user_chose, chat_format, num_ctx, system, warnings)
    ref = source.config.model.ref
    spec, hub_id = catalog_entry(ref)
    ollama_model = job.project_config.export.ollama_name or name
    loss_plot = RunLayout(source.run_dir).loss_plot
    if loss_plot.is_file():
        shutil.copy2(loss_plot, ExportLayout(partial).loss_plot)
    facts = ExportFacts(
        name=name,
        source=source,
        base_model=ref,
        base_hub_id=hub_id,
        licence=spec.licence if spec else None,
        architecture=job.architecture,
        parameters=merged.parameters,
        merged_dtype=merged.dtype,
        chat_template_name=setup.template_name,
        stop=stop,
        num_ctx=num_ctx,
        gguf_files=gguf_files,
        modelfile=modelfile_name,
        ollama_model=ollama_model,
        ollama_command=create_command(ollama_model, ProjectLayout(Path()).export(name).modelfile),
        data_stats=prepared_stats(source),
        eval_report=eval_report(source),
        loss_plot=loss_plot.name if loss_plot.is_file() else None,
    )
    metadata = build_metadata(facts)
    metadata.merged_seconds = round(merged.seconds, 2)
    timer.run("card", "Writing the model card and metadata", lambda: _write_card(partial, facts, metadata))
    return BuiltExport(
        metadata=metadata,
        gguf=gguf_files,
        modelfile=modelfile_name,
        template=template,
        modelfile_gguf=_modelfile_gguf(gguf_files, user_chose),
        system=system,
        stop=stop,
        num_ctx=num_ctx,
        warnings=warnings,
    )


def _write_ggufs(
    partial: Path,
    name: str,
    merged_dir: Path,
    quants: list[str],
    chat_format: ChatFormat,
    tokenizer: Any,
    timer: _Timer,
    progress: ExportProgress,
) -> dict[str, str]:
    from forgellm.export.gguf_convert import NATIVE_QUANTS, convert_to_gguf
    from forgellm.templates import to_hf_jinja

    files: dict[str, str] = {}
    template = to_hf_jinja(chat_format)
    eot = list(chat_format.stop_markers)
    add_bos = chat_format.add_bos

    def convert(quant: str, path: Path) -> None:
        timer.run(
            f"gguf_{quant}",
            f"Converting to GGUF {quant.upper()}",
            lambda: convert_to_gguf(
                merged_dir,
                path,
                quant=quant,
                chat_template=template,
                eot_tokens=eot,
                add_bos=add_bos,
                model_name=name,
                progress=lambda done, total: progress.tensors(quant.upper(), done, total),
            ),
        )

    for quant in (q for q in quants if q in NATIVE_QUANTS):
        path = ExportLayout(partial).gguf(name, quant)
        convert(quant, path)
        files[quant] = path.name
    k_quants = [q for q in quants if q not in NATIVE_QUANTS]
    if k_quants:
        from forgellm.export.quantize import quantize_gguf

        source = partial / files["f16"] if "f16" in files else partial / f".{name}-f16.tmp.gguf"
        if "f16" not in files:
            convert("f16", source)
        for quant in k_quants:
            path = ExportLayout(partial).gguf(name, quant)
            timer.run(
                f"gguf_{quant}",
                f"Quantizing to {quant.upper()} with llama.cpp",
                lambda quant=quant, path=path: quantize_gguf(source, path, quant),
            )
            files[quant] = path.name
        if "f16" not in files:
            source.unlink(missing_ok=True)
    # The order the user asked for, so "the first quant" means what they think it means.
    return {q: files[q] for q in quants if q in files}


def _write_modelfile(
    partial: Path,
    gguf_files: dict[str, str],
    user_chose: bool,
    chat_format: ChatFormat,
    num_ctx: int,
    system: str | None,
    warnings: list[str],
) -> tuple[str | None, str | None]:
    from forgellm.export.modelfile import build_modelfile
    from forgellm.templates import to_ollama_template

    gguf = _modelfile_gguf(gguf_files, user_chose)
    if gguf is None:
        return None, None
    try:
        template = to_ollama_template(chat_format)
    except ForgeError as exc:
        warnings.append(f"No Modelfile: {exc.message} {exc.fix or ''}".strip())
        return None, None
    text = build_modelfile(gguf, chat_format, num_ctx=num_ctx, system_prompt=system)
    from forgellm.files import atomic_write_text

    modelfile = ExportLayout(partial).modelfile
    atomic_write_text(modelfile, text)
    return modelfile.name, template


def _write_card(partial: Path, facts: ExportFacts, metadata: ExportMetadata) -> None:
    from forgellm.files import atomic_write_text

    export = ExportLayout(partial)
    atomic_write_text(export.card, build_card(facts))
    metadata.save(export)


def _publish(partial: Path, final: Path) -> None:
    """Swap the finished folder into place; an older export of the same name goes only once the new one is there."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(partial, final)
    shutil.rmtree(old, ignore_errors=True)


def _os_error(exc: OSError, exports: Path) -> ForgeError:
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ForgeError(
            f"The disk filled up during the export; nothing was left behind in {exports}.",
            fix="Free some disk space and run `forge export` again (or export fewer GGUF types with --quant).",
            code=ErrorCode.DISK_FULL,
            data={"path": str(exports), "cause": cause(exc)},
        )
    return ForgeError(
        f"The export failed writing files: {exc}.",
        fix=f"Check that {exports} is writable.",
        code=ErrorCode.WRITE_FAILED,
        data={"path": str(exports), "cause": cause(exc)},
    )


def _result(
    final: Path, name: str, source: ExportSource, built: BuiltExport, timer: _Timer, replaced: bool
) -> ExportResult:
    export = ExportLayout(final)
    return ExportResult(
        name=name,
        folder=final,
        run_id=source.run_id,
        checkpoint=source.checkpoint,
        merged_dir=export.merged,
        gguf_files={q: final / f for q, f in built.gguf.items()},
        modelfile=final / built.modelfile if built.modelfile else None,
        card=export.card,
        metadata=export.metadata,
        ollama=OllamaRecord(**asdict(built.metadata.ollama)),
        seconds_by_stage=timer.seconds,
        warnings=built.warnings,
        replaced=replaced,
    )


def _register(result: ExportResult, built: BuiltExport, environ: dict[str, str], timer: _Timer) -> OllamaRecord:
    """Create the model in Ollama when a server answers; else keep the command to run later."""
    from forgellm.export.ollama import ollama_available, ollama_host, register_with_ollama

    record = OllamaRecord(**asdict(built.metadata.ollama))
    record.host = ollama_host(environ)
    record.reachable = ollama_available(record.host)
    if not record.reachable:
        return record
    parameters: dict[str, Any] = {"stop": built.stop, "num_ctx": built.num_ctx}
    try:
        answer = timer.run(
            "ollama",
            f"Creating {record.model} in Ollama at {record.host}",
            lambda: register_with_ollama(
                record.model,
                result.folder / str(built.modelfile_gguf),
                template=built.template,
                system=built.system,
                parameters=parameters,
                host=record.host,
            ),
        )
    except ForgeError as exc:
        record.error = f"{exc.message} {exc.fix or ''}".strip()
        record.error_code = str(exc.code)
        return record
    record.registered, record.smoke_answer, record.seconds = True, answer.smoke_answer, round(answer.seconds, 2)
    return record
