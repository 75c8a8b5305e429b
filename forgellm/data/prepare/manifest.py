"""Fingerprints of a `prepare` run: of the input, of the settings and of the chat template. Recorded in
the manifest (forgellm.project.manifest), they are the basis for resuming and for refusing to resume
(or to train) when the input, the settings or the template changed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from forgellm.config.schema import ChatTemplateSection, ForgeConfig
from forgellm.errors import ForgeError

_BLOCK = 1 << 20


def input_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    return [path]


def stat_signature(path: Path) -> str:
    """A cheap identity of the input from its files' names, sizes and modification times. `forge status`
    compares it with the one recorded at preparation, so it hashes the content only when these differ."""
    entries = []
    for file in input_files(path):
        info = file.stat()
        name = str(file.relative_to(path)) if path.is_dir() else file.name
        entries.append(f"{name}\0{info.st_size}\0{info.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def input_fingerprint(path: Path, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """SHA-256 of the content (of every file, for a folder), so an edited input is always noticed."""
    # Taken before reading: a file edited while it is hashed then has a newer signature than the one
    # recorded, and is checked again rather than taken as unchanged.
    signature = stat_signature(path)
    digest = hashlib.sha256()
    total = 0
    for file in input_files(path):
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\0")
        with open(file, "rb") as handle:
            while block := handle.read(_BLOCK):
                digest.update(block)
                total += len(block)
                if progress:
                    progress(len(block))
    return {"sha256": digest.hexdigest(), "bytes": total, "path": str(path.resolve()), "stat": signature}


def settings_fingerprint(config: ForgeConfig, tokenizer_id: str, *, base_dir: Path = Path(".")) -> str:
    """Everything that changes the prepared output: recipe, preprocessing, model, template, stage.

    ``base_dir`` is the project folder, against which a custom template's .jinja path is read: the
    template's content counts, not its path, so editing the file makes the data stale."""
    relevant = {
        "data": config.data.model_dump(mode="json", exclude={"rationale", "source"}),
        "preprocessing": config.preprocessing.model_dump(mode="json", exclude={"rationale"}),
        "model": config.model.model_dump(mode="json", exclude={"rationale", "architecture"}),
        "template": template_source_hash(config.model.chat_template, base_dir),
        "stage": config.training.stage,
        "tokenizer": tokenizer_id,
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def template_source_hash(settings: ChatTemplateSection, base_dir: Path) -> str:
    """SHA-256 of the template forge.yaml names, found without a tokenizer (`forge status` has none):
    a custom template's text (a .jinja file's content), a builtin family's definition. 'auto' and
    'tokenizer' depend on the model: the tokenizer id and the recorded template text cover them."""
    from forgellm.models.loading import custom_jinja
    from forgellm.templates.families import FAMILIES

    if settings.name == "custom":
        try:
            text = custom_jinja(settings, base_dir) or ""
        except ForgeError:  # the file is gone: nothing to compare, so nothing prepared can match
            text = f"missing file: {settings.jinja}"
    elif settings.name in FAMILIES:
        spec = FAMILIES[settings.name]
        definition = {f.name: getattr(spec, f.name) for f in fields(spec) if f.name != "description"}
        text = json.dumps(definition, sort_keys=True, default=dict)  # role_names is a mappingproxy
    else:
        text = settings.name
    return hashlib.sha256(text.encode()).hexdigest()


def template_record(chat_format: Any, name: str) -> dict[str, str]:
    """The exact template a preparation renders with, as a Hugging Face Jinja template (what export
    writes into tokenizer_config.json and the GGUF), with its SHA-256: training and export compare it."""
    from forgellm.templates import to_hf_jinja

    text = to_hf_jinja(chat_format)
    return {"name": name, "text": text, "sha256": hashlib.sha256(text.encode()).hexdigest()}


def short_hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def tokenizer_id(setup: Any) -> str:
    """The tokenizer's identity recorded in manifest.json: training refuses data prepared with another."""
    return f"{setup.source.hub_id or setup.source.ref}:{len(setup.tokenizer)}"
