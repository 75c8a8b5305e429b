"""On-disk cache of validated advisor answers, keyed by the request: a re-run of `forge plan` gets the
same answer without the network, so a plan is reproducible offline.

Only answers are stored (never the API key, never the prompt with its data rows). A corrupt or foreign
entry is ignored and overwritten by the next answer.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from forgellm.project.layout import ADVISOR_CACHE, ProjectLayout

CACHE_FORMAT = 1


def default_cache_dir(project_dir: Path | None) -> Path:
    """``<project>/.forge/advisor-cache``; user-wide under FORGE_HOME when there is no project."""
    if project_dir is not None:
        return ProjectLayout(Path(project_dir)).advisor_cache
    from forgellm.config.settings import forge_home

    return forge_home() / ADVISOR_CACHE


def request_key(*, provider: str, model: str, task: str, system: str, prompt: str, schema: type[BaseModel]) -> str:
    """sha256 of the canonical request: everything that can change the answer, nothing else."""
    canonical = json.dumps(
        {
            "format": CACHE_FORMAT,
            "provider": provider,
            "model": model,
            "task": task,
            "system": system,
            "prompt": prompt,
            "schema_name": schema.__name__,
            "schema": schema.model_json_schema(),
        },
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class AdvisorCache:
    """One JSON file per answer: ``<directory>/<key>.json``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached answer for ``key``, or None when there is none or it cannot be read."""
        try:
            entry = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("answer"), dict):
            return None
        return entry["answer"]

    def put(self, key: str, answer: dict[str, Any], *, provider: str, model: str, task: str) -> Path:
        """Store ``answer`` atomically (temp file + rename): a crash never leaves half an entry."""
        from forgellm.files import atomic_write_text

        entry = {"key": key, "provider": provider, "model": model, "task": task, "answer": answer}
        path = self.path(key)
        atomic_write_text(path, json.dumps(entry, indent=2, ensure_ascii=False) + "\n")
        return path
