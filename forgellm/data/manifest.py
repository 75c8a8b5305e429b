"""Fingerprints and the manifest of a `prepare` run: what was read, with which settings, and which
chunks are finished — the basis for resuming and for refusing to resume when the input changed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgellm.config.io import atomic_write_text
from forgellm.config.schema import ForgeConfig
from forgellm.project.layout import MANIFEST

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


def settings_fingerprint(config: ForgeConfig, tokenizer_id: str) -> str:
    """Everything that changes the prepared output: recipe, preprocessing, model, template, stage."""
    relevant = {
        "data": config.data.model_dump(mode="json", exclude={"rationale", "source"}),
        "preprocessing": config.preprocessing.model_dump(mode="json", exclude={"rationale"}),
        "model": config.model.model_dump(mode="json", exclude={"rationale", "architecture"}),
        "stage": config.training.stage,
        "tokenizer": tokenizer_id,
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def short_hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


@dataclass
class Manifest:
    """The record of one preparation; rewritten atomically after every finished chunk."""

    input: dict[str, Any]
    settings_fingerprint: str
    tokenizer: str
    chunk_rows: int
    format: str
    chunks: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = False
    output_fingerprint: str | None = None

    def save(self, folder: Path) -> None:
        atomic_write_text(folder / MANIFEST, json.dumps(self.__dict__, indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Manifest | None:
        try:
            data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None


def tokenizer_id(setup: Any) -> str:
    """The tokenizer's identity recorded in manifest.json: training refuses data prepared with another."""
    return f"{setup.source.hub_id or setup.source.ref}:{len(setup.tokenizer)}"
