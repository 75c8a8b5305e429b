"""`forge config validate`: forge.yaml as the schema sees it, and what the schema cannot see — that
model.ref names a model Forge can find (a catalog alias, a hub id, a local folder or .gguf). Checked
without a network and without converting or downloading anything."""

from __future__ import annotations

from pathlib import Path

from forgellm.config.io import LoadedConfig, load_config
from forgellm.errors import ForgeError


def validate_config(path: str | Path) -> LoadedConfig:
    """The loaded forge.yaml, or a ForgeError naming every problem (the model's among them)."""
    from forgellm.models.resolve import resolve_model

    loaded = load_config(path)
    try:
        resolve_model(loaded.config.model.ref)
    except ForgeError as exc:
        raise ForgeError(
            f"{loaded.path}: model.ref '{loaded.config.model.ref}' is not a model Forge can find.",
            details=[exc.message],
            fix=exc.fix,
            code=exc.code,
            data={**exc.data, "key": "model.ref"},
        ) from None
    return loaded
