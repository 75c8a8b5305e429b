"""Loading helpers: a model reference + the template settings of forge.yaml -> tokenizer and chat format."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgellm.config.schema import ChatTemplateSection
from forgellm.errors import ErrorCode, ForgeError, cause
from forgellm.files import read_json_object
from forgellm.models.resolve import ModelSource, materialize, resolve_model

if TYPE_CHECKING:
    from forgellm.templates.messages import ChatFormat


@dataclass
class ChatSetup:
    """Everything needed to render conversations for one model."""

    source: ModelSource
    model_dir: Path
    tokenizer: Any
    chat_format: ChatFormat
    template_name: str  # the family actually used ('auto' resolved)
    warnings: list[str] = field(default_factory=list)


# One tokenizer and one ChatSetup per model folder (and template settings) per process: inside one
# `forge ignite`, prepare, eval and export share them instead of loading the same files three times.
# Callers treat them as read-only (export copies the tokenizer before it changes its template).
_TOKENIZERS: dict[Path, Any] = {}
_SETUPS: dict[tuple[Path, str, Path, str | None], ChatSetup] = {}


def clear_caches() -> None:
    """Forget the shared tokenizers and chat setups (a model folder rewritten in place)."""
    _TOKENIZERS.clear()
    _SETUPS.clear()


def load_tokenizer(model_dir: Path) -> Any:
    """The tokenizer of a model folder, loaded once per process (see _TOKENIZERS)."""
    key = Path(model_dir).resolve()
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = _read_tokenizer(key)
    return _TOKENIZERS[key]


def _read_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(str(model_dir))
    except Exception as exc:  # missing or damaged tokenizer files take many forms
        raise ForgeError(
            f"Cannot load the tokenizer of {model_dir} ({type(exc).__name__}: {exc}).",
            fix="The model folder needs tokenizer.json (or tokenizer.model) and tokenizer_config.json.",
            code=ErrorCode.TOKENIZER_UNREADABLE, data={"cause": cause(exc)},
        ) from None


def read_model_config(model_dir: Path) -> dict[str, Any]:
    return read_json_object(model_dir / "config.json")


def custom_jinja(settings: ChatTemplateSection, base_dir: Path) -> str | None:
    """The custom template text: `jinja` is either the template itself or the path of a .jinja file."""
    value = settings.jinja
    if value is None or "{" in value:  # a template always has {{ or {%
        return value
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise ForgeError(
            f"model.chat_template.jinja names a file that does not exist: {path}.",
            fix="Give the path of a .jinja file (relative to forge.yaml) or the template text itself.",
            code=ErrorCode.FILE_NOT_FOUND, data={"path": str(path)},
        )
    return path.read_text(encoding="utf-8")


def chat_format_for(
    settings: ChatTemplateSection,
    tokenizer: Any,
    *,
    base_dir: Path,
    model_name: str | None,
    model_config: dict[str, Any],
) -> ChatFormat:
    """The chat format that forge.yaml's model.chat_template settings ask for, on this tokenizer."""
    from forgellm.templates import build_chat_format

    return build_chat_format(
        settings.name,
        tokenizer,
        system_prompt=settings.system_prompt,
        add_bos=settings.add_bos,
        role_names=settings.role_names or None,
        jinja_template=custom_jinja(settings, base_dir),
        model_name=model_name,
        model_config=model_config,
    )


def chat_setup(
    model_ref: str,
    settings: ChatTemplateSection | None = None,
    *,
    base_dir: Path = Path("."),
    progress: Callable[[str], None] | None = None,
) -> ChatSetup:
    """Resolve the model, load its tokenizer, and build the chat format forge.yaml asks for; built once
    per process for a model folder, settings and base folder (a copy with its own `warnings` list)."""
    settings = settings or ChatTemplateSection()
    source = resolve_model(model_ref)
    model_dir = materialize(source, progress)
    # A custom template's text is part of the key: the .jinja file may be edited between two stages.
    text = custom_jinja(settings, base_dir) if settings.jinja else None
    key = (Path(model_dir).resolve(), settings.model_dump_json(), Path(base_dir).resolve(), text)
    if key not in _SETUPS:
        _SETUPS[key] = _build_setup(source, model_ref, model_dir, settings, base_dir)
    return replace(_SETUPS[key], warnings=list(_SETUPS[key].warnings))


def _build_setup(
    source: ModelSource, model_ref: str, model_dir: Path, settings: ChatTemplateSection, base_dir: Path
) -> ChatSetup:
    from forgellm.templates import pad_token_warning

    tokenizer = load_tokenizer(model_dir)
    chat_format = chat_format_for(
        settings,
        tokenizer,
        base_dir=base_dir,
        model_name=source.hub_id or model_ref,
        model_config=read_model_config(model_dir),
    )
    warnings = [w for w in [pad_token_warning(chat_format, tokenizer)] if w]
    return ChatSetup(source, model_dir, tokenizer, chat_format, chat_format.name, warnings)
