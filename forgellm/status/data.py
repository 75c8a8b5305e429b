"""Is the prepared data current? Prepared folders, their split counts, and whether the input file or
forge.yaml's data/preprocessing/model settings changed since they were made — without loading a
tokenizer and without hashing a big input on every `forge status`."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

from forgellm.config.io import atomic_write_text, read_json_object
from forgellm.config.schema import ForgeConfig
from forgellm.data.manifest import MANIFEST, input_files, input_fingerprint, settings_fingerprint, stat_signature
from forgellm.status.files import iso_mtime, number, read_record

PREPARED_DIR = Path("data") / "prepared"
HASH_CACHE = Path(".forge") / "input-hashes.json"
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
            cache = read_json_object(self.root / HASH_CACHE)
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
            atomic_write_text(self.root / HASH_CACHE, json.dumps(kept, indent=1) + "\n")
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
    entries = [_entry(root, folder, config, source, check) for folder in _folders(root)]
    partial = [_partial(folder) for folder in sorted((root / PREPARED_DIR).glob(".partial-*")) if folder.is_dir()]
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


def _folders(root: Path) -> list[Path]:
    """Published preparations, newest first (by their manifest's last write)."""
    prepared = root / PREPARED_DIR
    if not prepared.is_dir():
        return []
    folders = [p for p in prepared.iterdir() if p.is_dir() and not p.name.startswith(".")]

    def written(folder: Path) -> float:
        try:
            return (folder / MANIFEST).stat().st_mtime
        except OSError:
            return folder.stat().st_mtime

    return sorted(folders, key=written, reverse=True)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _entry(
    root: Path, folder: Path, config: ForgeConfig | None, source: Path | None, check: _InputCheck | None
) -> dict[str, Any]:
    problems: list[str] = []
    manifest = read_record(folder / MANIFEST, problems, MANIFEST)
    stats = _dict(read_record(folder / "stats.json", problems, "stats.json"))
    recorded_input = _dict((manifest or {}).get("input"))
    entry: dict[str, Any] = {
        "name": folder.name,
        "path": str(folder.relative_to(root)),
        "complete": bool(manifest and manifest.get("complete") is True),
        "prepared_at": iso_mtime(folder / MANIFEST),
        "examples": {split: number(_dict(info).get("examples")) for split, info in _dict(stats.get("splits")).items()},
        "rejected": number(stats.get("rejected")),
        "input_file": Path(str(recorded_input.get("path") or "")).name or None,
        "tokenizer": (manifest or {}).get("tokenizer"),
        "settings_current": None,
        "input_current": None,
        "reasons": [],
        "problems": problems,
    }
    if manifest is None or not entry["complete"]:
        if not (folder / MANIFEST).exists():
            problems.append("no manifest.json: not a finished preparation")
        entry["state"] = "damaged" if (folder / MANIFEST).exists() and manifest is None else "incomplete"
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


def _settings_current(manifest: dict[str, Any], config: ForgeConfig | None, root: Path) -> bool | None:
    """Recompute the manifest's settings fingerprint with forge.yaml's settings and the manifest's own
    tokenizer id. Loading the tokenizer (transformers, seconds) to learn the current id is what status
    must not do; holding it fixed still catches every settings change, a new model included, since
    model.ref is part of the fingerprint. Only a changed tokenizer behind the same model.ref (a new hub
    revision) escapes, and `forge train` refuses that data with a clear message."""
    tokenizer = manifest.get("tokenizer")
    recorded = manifest.get("settings_fingerprint")
    if config is None or not isinstance(tokenizer, str) or not isinstance(recorded, str):
        return None
    return settings_fingerprint(config, tokenizer, base_dir=root) == recorded


def _what_changed(stats: dict[str, Any], config: ForgeConfig | None) -> str:
    """The fingerprint says that something changed, not what: name what stats.json recorded and differs."""
    if config is None:
        return ""
    now = {
        "model.ref": config.model.ref,
        "model.max_length": config.model.max_length,
        "training.stage": config.training.stage,
        "data.format": config.data.format,
    }
    then = {"model.ref": "model", "model.max_length": "max_length", "training.stage": "stage", "data.format": "format"}
    return ", ".join(
        f"{key} {stats[then[key]]} → {value}"
        for key, value in now.items()
        if then[key] in stats and stats[then[key]] != value
    )


def _partial(folder: Path) -> dict[str, Any]:
    """An interrupted preparation: `forge prepare FILE` resumes it from its last finished chunk."""
    problems: list[str] = []
    chunks = _dict(read_record(folder / MANIFEST, problems, MANIFEST)).get("chunks")
    return {
        "name": folder.name,
        "chunks_done": len(chunks) if isinstance(chunks, list) else None,
        "updated_at": iso_mtime(folder / MANIFEST),
        "problems": problems,
    }
