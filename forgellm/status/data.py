"""Is the prepared data current? Prepared folders, their split counts, and whether the input file or
forge.yaml's data/preprocessing/model settings changed since they were made — without loading a
tokenizer and without hashing a big input on every `forge status`."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

from forgellm.config.schema import ForgeConfig
from forgellm.data.prepare.manifest import input_files, input_fingerprint, settings_fingerprint, stat_signature
from forgellm.files import atomic_write_text, read_json_object
from forgellm.project.layout import PreparedLayout, ProjectLayout
from forgellm.project.manifest import Manifest
from forgellm.project.prepared import PreparedData, PreparedStats, prepared_folders
from forgellm.status.files import iso_mtime, note_damaged, number

_CACHE_ENTRIES = 32  # a handful of inputs per project; older signatures are of files long edited


def display_path(path: Path, here: Path) -> str:
    """A path as the user types it from the folder they ran `forge status` in, quoted for the shell."""
    try:
        text = os.path.relpath(path, here)
    except ValueError:  # another drive on Windows
        text = str(path)
    if text.startswith(".." + os.sep + ".." + os.sep + ".."):
        text = str(path)  # three levels up reads worse than the absolute path
    return shlex.quote(text)


def source_path(root: Path, config: ForgeConfig | None) -> Path | None:
    """forge.yaml's data.source: relative paths are relative to the project (as `forge plan` writes them)."""
    if config is None or not config.data.source:
        return None
    path = Path(config.data.source).expanduser()
    return path if path.is_absolute() else root / path


class _InputCheck:
    """The current input's signature, and its SHA-256 when needed: computed at most once per status,
    and remembered in .forge/ by signature so an unchanged big file is never hashed twice."""

    def __init__(self, root: Path, path: Path) -> None:
        self.root, self.path = root, path
        self.signature = stat_signature(path)
        self.bytes = sum(f.stat().st_size for f in input_files(path))
        self._key = f"{path.resolve()}|{self.signature}"  # the signature names files, not their folder
        self._sha256: str | None = None
        self.hashed = False

    def sha256(self) -> str:
        if self._sha256 is None:
            cache = read_json_object(ProjectLayout(self.root).input_hashes)
            entry = cache.get(self._key)
            if isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
                self._sha256 = entry["sha256"]
            else:
                self._sha256 = input_fingerprint(self.path)["sha256"]
                self.hashed = True
                self._remember(cache)
        return self._sha256

    def _remember(self, cache: dict[str, Any]) -> None:
        cache.pop(self._key, None)  # re-inserted last: the newest entries are the ones kept
        cache[self._key] = {"sha256": self._sha256, "bytes": self.bytes}
        kept = dict(list(cache.items())[-_CACHE_ENTRIES:])
        try:
            atomic_write_text(ProjectLayout(self.root).input_hashes, json.dumps(kept, indent=1) + "\n")
        except OSError:  # a read-only project: status still answers, it just hashes again next time
            pass

    def compare(self, recorded: dict[str, Any]) -> tuple[bool | None, str | None]:
        """(same content, why not) against a manifest's input record; None when the file cannot be read."""
        if recorded.get("stat") == self.signature:
            return True, None
        then = number(recorded.get("bytes"))
        if then != self.bytes:
            return False, f"{then:,} bytes then, {self.bytes:,} now" if then is not None else "size unknown then"
        try:
            same = recorded.get("sha256") == self.sha256()
        except OSError as exc:
            return None, f"it cannot be read ({exc.strerror or exc})"
        return (True, None) if same else (False, "same size, different content")


def prepared_status(root: Path, config: ForgeConfig | None, here: Path) -> dict[str, Any]:
    """The `data` section of `forge status`."""
    source = source_path(root, config)
    check = _input_check(root, source)
    layout = ProjectLayout(root)
    entries = [_entry(root, folder, config, source, check) for folder in prepared_folders(layout)]
    partial = [_partial(PreparedLayout(folder)) for folder in layout.partial_prepared_dirs()]
    usable = [e for e in entries if e["state"] == "current"]
    complete = [e for e in entries if e["complete"]]
    if usable:
        state, chosen = "current", usable[0]
    elif partial:
        state, chosen = "interrupted", complete[0] if complete else None
    elif config is None and complete:
        state, chosen = "unknown", None
    elif complete:
        state, chosen = "stale", complete[0]
    else:
        state, chosen = "none", None
    file_arg = display_path(source, here) if source is not None else "FILE"
    return {
        "source": config.data.source if config else None,
        "source_path": str(source) if source else None,
        "source_exists": source.exists() if source is not None else None,
        "input_hashed_now": bool(check and check.hashed),
        "state": state,
        "current": chosen["name"] if chosen and state == "current" else None,
        "stale_reasons": chosen["reasons"] if chosen and state != "current" else [],
        "prepare_command": f"forge prepare {file_arg}",
        "prepared": entries,
        "interrupted": partial,
    }


def _input_check(root: Path, source: Path | None) -> _InputCheck | None:
    if source is None or not source.exists():
        return None
    try:
        return _InputCheck(root, source)
    except OSError:  # a file removed or unreadable while we looked: its freshness is unknown
        return None


def _entry(
    root: Path, folder: PreparedLayout, config: ForgeConfig | None, source: Path | None, check: _InputCheck | None
) -> dict[str, Any]:
    problems: list[str] = []
    data = note_damaged(folder.manifest, PreparedData.load(folder), problems)
    # Read on its own too: an unfinished or damaged preparation may still have counts to show.
    stats = note_damaged(folder.stats, data.stats if data else PreparedStats.load(folder), problems)
    manifest = data.manifest if data else None
    recorded_input = manifest.input if manifest and isinstance(manifest.input, dict) else {}
    entry: dict[str, Any] = {
        "name": folder.name,
        "path": str(folder.folder.relative_to(root)),
        "complete": bool(data and data.complete),
        "prepared_at": iso_mtime(folder.manifest),
        "examples": stats.examples() if stats else {},
        "rejected": number(stats.rejected) if stats else None,
        "sources": {name: source.get("used") for name, source in stats.sources.items()} if stats else {},  # a mixture
        "input_file": Path(str(recorded_input.get("path") or "")).name or None,
        "tokenizer": manifest.tokenizer if manifest else None,
        "settings_current": None,
        "input_current": None,
        "reasons": [],
        "problems": problems,
    }
    if manifest is None or not entry["complete"]:
        if not folder.manifest.exists():
            problems.append(f"no {folder.manifest.name}: not a finished preparation")
        entry["state"] = "damaged" if folder.manifest.exists() and manifest is None else "incomplete"
        return entry
    entry["settings_current"] = _settings_current(manifest, config, root)
    if entry["settings_current"] is False:
        changed = _what_changed(stats, config)
        entry["reasons"].append(
            "forge.yaml's data, preprocessing or model settings changed since" + (f" ({changed})" if changed else "")
        )
    if check is not None and source is not None and recorded_input:
        same, why = check.compare(recorded_input)
        entry["input_current"] = same
        if same is None:
            problems.append(f"{source.name}: {why}")
        elif not same:
            then = entry["input_file"]
            changed = f"prepared from {then}; data.source is now {source.name}" if then and then != source.name else ""
            entry["reasons"].append(changed or f"{source.name} changed since ({why})")
    current = entry["settings_current"] is not False and entry["input_current"] is not False
    # Without a valid forge.yaml there is nothing to compare with: neither current nor stale.
    entry["state"] = "unknown" if config is None else "current" if current else "stale"
    return entry


def _settings_current(manifest: Manifest, config: ForgeConfig | None, root: Path) -> bool | None:
    """Recompute the manifest's settings fingerprint with forge.yaml's settings and the manifest's own
    tokenizer id. Loading the tokenizer (transformers, seconds) to learn the current id is what status
    must not do; holding it fixed still catches every settings change, a new model included, since
    model.ref is part of the fingerprint. Only a changed tokenizer behind the same model.ref (a new hub
    revision) escapes, and `forge train` refuses that data with a clear message."""
    tokenizer, recorded = manifest.tokenizer, manifest.settings_fingerprint
    if config is None or not isinstance(tokenizer, str) or not isinstance(recorded, str):
        return None
    return settings_fingerprint(config, tokenizer, base_dir=root) == recorded


def _what_changed(stats: PreparedStats | None, config: ForgeConfig | None) -> str:
    """The fingerprint says that something changed, not what: name what stats.json recorded and differs."""
    if config is None or stats is None:
        return ""
    pairs = (
        ("model.ref", stats.model, config.model.ref),
        ("model.max_length", stats.max_length, config.model.max_length),
        ("training.stage", stats.stage, config.training.stage),
        ("data.format", stats.format, config.data.format),
    )
    return ", ".join(f"{key} {then} → {now}" for key, then, now in pairs if then is not None and then != now)


def _partial(folder: PreparedLayout) -> dict[str, Any]:
    """An interrupted preparation: `forge prepare FILE` resumes it from its last finished chunk."""
    problems: list[str] = []
    manifest = note_damaged(folder.manifest, Manifest.load(folder.folder), problems)
    chunks = manifest.chunks if manifest else None
    return {
        "name": folder.name,
        "chunks_done": len(chunks) if isinstance(chunks, list) else None,
        "updated_at": iso_mtime(folder.manifest),
        "problems": problems,
    }
