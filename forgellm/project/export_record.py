"""The record of an export: exports/<name>/metadata.json (`ExportMetadata`), written once by
`forge export` when the export is complete and read by `forge inference`, `forge status` and the UI."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from forgellm.project.layout import MERGED, ExportLayout, ProjectLayout
from forgellm.project.record_io import (
    RECORD_VERSION,
    as_dict,
    as_int,
    as_list,
    as_str,
    known_fields,
    read_object,
    write_object,
)


@dataclass
class ExportFiles:
    """The export's files, relative to its folder."""

    merged: str = MERGED
    gguf: dict[str, str] = field(default_factory=dict)  # quant -> file name, in the order asked for
    modelfile: str | None = None  # None when no Modelfile could be written


@dataclass
class OllamaRecord:
    """Whether the export was registered with Ollama, and how to do it by hand."""

    registered: bool = False
    model: str | None = None
    command: str | None = None
    host: str | None = None
    reachable: bool | None = None
    error: str | None = None
    error_code: str | None = None  # forgellm.errors.ErrorCode of the failure
    smoke_answer: str | None = None
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The keys set so far: a record written before registration has no host or reachable."""
        data = asdict(self)
        return {k: v for k, v in data.items() if v is not None or k in ("registered", "model", "command")}


@dataclass
class ExportMetadata:
    """metadata.json: what an export holds and how it was made (template, stop tokens, context length)."""

    name: str = ""
    base_model: str | None = None  # forge.yaml's model reference (alias, hub id or path)
    base_model_hub_id: str | None = None
    base_model_dir: str | None = None
    architecture: str | None = None
    parameters: int | None = None
    training_type: str | None = None
    stage: str | None = None
    run_id: str | None = None
    checkpoint: str | None = None  # "best" or "step-N"
    published_at: str | None = None
    licence: str | None = None
    chat_template: dict[str, Any] = field(default_factory=dict)  # forge.yaml's model.chat_template section
    chat_template_resolved: str | None = None
    stop: list[str] = field(default_factory=list)
    num_ctx: int | None = None
    files: ExportFiles = field(default_factory=ExportFiles)
    config: dict[str, Any] = field(default_factory=dict)  # the run's config snapshot
    performance: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    ollama: OllamaRecord = field(default_factory=OllamaRecord)
    merged_seconds: float | None = None
    hub_url: str | None = None
    version: int = RECORD_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ollama"] = self.ollama.to_dict()
        if self.hub_url is None:  # only a pushed export names a hub page
            data.pop("hub_url")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportMetadata:
        meta = known_fields(cls, data)
        files = as_dict(meta.files)
        meta.files = ExportFiles(
            merged=as_str(files.get("merged")) or MERGED,
            gguf={str(q): str(name) for q, name in as_dict(files.get("gguf")).items()},
            modelfile=as_str(files.get("modelfile")),
        )
        ollama = as_dict(meta.ollama)
        meta.ollama = known_fields(OllamaRecord, ollama)
        meta.ollama.registered = ollama.get("registered") is True
        meta.num_ctx = as_int(meta.num_ctx)
        meta.stop = [str(s) for s in as_list(meta.stop)]
        for name in ("chat_template", "config", "performance", "data"):
            setattr(meta, name, as_dict(getattr(meta, name)))
        return meta

    def save(self, export: ExportLayout | Path) -> None:
        write_object(_export(export).metadata, self.to_dict())

    @classmethod
    def load(cls, export: ExportLayout | Path) -> ExportMetadata | None:
        """None when metadata.json is missing (not a finished Forge export) or damaged."""
        data = read_object(_export(export).metadata)
        return cls.from_dict(data) if data is not None else None


def _export(export: ExportLayout | Path) -> ExportLayout:
    return export if isinstance(export, ExportLayout) else ExportLayout(Path(export))


def export_folders(project: ProjectLayout) -> list[ExportLayout]:
    """Folders under exports/ that are not an export in progress (those are hidden), in no order."""
    if not project.exports_dir.is_dir():
        return []
    return [ExportLayout(p) for p in project.exports_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]


def newest_export(project: ProjectLayout) -> ExportLayout | None:
    """The export whose metadata.json was written last (every finished export has one)."""
    found = [export for export in export_folders(project) if export.metadata.is_file()]
    return max(found, key=lambda export: export.metadata.stat().st_mtime) if found else None
