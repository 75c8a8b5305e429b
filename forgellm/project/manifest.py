"""The manifest of a preparation (data/prepared/<fp>/manifest.json): what was read, with which settings,
tokenizer, max_length and chat template, and which chunks are finished. `forge prepare` writes it after
every chunk (the basis for resuming); training, export and status read it through `PreparedData`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgellm.files import atomic_write_text
from forgellm.project.layout import MANIFEST


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
    # model.max_length the examples were cut to; a run with a shorter one (after healing) cuts again.
    max_length: int | None = None
    # template_record(): the exact template the data was rendered with ({name, text, sha256}).
    chat_template: dict[str, str] | None = None

    def save(self, folder: Path) -> None:
        atomic_write_text(folder / MANIFEST, json.dumps(self.__dict__, indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Manifest | None:
        try:
            data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None
