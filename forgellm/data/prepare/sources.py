"""The sources of a mixture (forge.yaml `data.sources`), made ready for `prepare`: found (a file, a folder,
or a hub data set already on this machine), each one's format and recipe detected exactly as for a single
`data.source` (`detect.detect_data_format`), and read one after the other as a single stream whose items
say which source they come from. The mixture rule itself (counts, selection) is `mixture.py`'s.

Relative paths are relative to the project folder, as `forge plan` writes data.source.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgellm.config.schema import HUB_PREFIX, ForgeConfig, RecipeSection
from forgellm.data.prepare.mixture import Share
from forgellm.data.read.records import BadRow, Record
from forgellm.errors import ErrorCode, ForgeError
from forgellm.project.layout import ProjectLayout


@dataclass(frozen=True, slots=True)
class SourceItem:
    """A record (or unreadable row) of the mixture's stream, with the name of the source it comes from."""

    name: str
    item: Record | BadRow


@dataclass
class MixtureSource:
    name: str
    role: str
    path: Path
    format: str
    recipe: RecipeSection
    ratio: float | None
    count: int | None
    detected: Any = None  # the Detection, when the format was detected (recorded in forge.yaml afterwards)

    def describe(self) -> dict[str, Any]:
        share = {"ratio": self.ratio} if self.ratio is not None else {"count": self.count}
        return {"role": self.role, "path": str(self.path), "format": self.format, **share}


@dataclass
class Mixture:
    sources: list[MixtureSource]
    seed: int
    warnings: list[str] = field(default_factory=list)
    readings: dict[str, Callable[[], dict[str, Any]]] = field(default_factory=dict)

    def source(self, name: str) -> MixtureSource:
        return next(s for s in self.sources if s.name == name)

    def shares(self) -> list[Share]:
        return [Share(s.name, s.ratio, s.count) for s in self.sources]

    def fingerprint(self) -> dict[str, Any]:
        """The inputs' fingerprint (manifest.input): every source's content, name and role."""
        from forgellm.data.prepare.manifest import input_fingerprint

        digest, total, stats = hashlib.sha256(), 0, []
        for source in self.sources:
            one = input_fingerprint(source.path)
            digest.update(f"{source.name}\0{source.role}\0{one['sha256']}\n".encode())
            total += one["bytes"]
            stats.append(one["stat"])
        paths = "; ".join(f"{s.name}={s.path}" for s in self.sources)
        return {"sha256": digest.hexdigest(), "bytes": total, "path": paths, "stat": "|".join(stats)}

    def items(self, batch_rows: int, step: Callable[[str], None]) -> tuple[Iterator[SourceItem], int | None]:
        """Every source's items, source after source, each tagged with its source's name; and an estimate of
        their number. Streamed: a source is opened when the one before it is read to its end."""
        from forgellm.data.read.readers import estimate_rows, open_dataset

        estimates = [estimate_rows(open_dataset(s.path, batch_rows=batch_rows)) for s in self.sources]
        total = None if any(e is None for e in estimates) else sum(e or 0 for e in estimates)

        def stream() -> Iterator[SourceItem]:
            for source in self.sources:
                dataset = open_dataset(source.path, batch_rows=batch_rows)
                self.readings[source.name] = dataset.reading
                items: Any = itertools.chain.from_iterable(dataset.batches())
                if source.format == "thread":
                    from forgellm.data.read.threads import link_threads

                    step(f"Linking the reply threads of {source.name}")
                    items = link_threads(items, source.recipe)
                for item in items:
                    yield SourceItem(source.name, item)

        return stream(), total

    def settled(self, config: ForgeConfig) -> ForgeConfig:
        """The config with each detected source's format and recipe in its entry: what forge.yaml holds after
        `record_detections`, so the settings' fingerprint is the same on the next run ("already prepared")."""
        updated = config.model_copy(deep=True)
        for entry in updated.data.sources:
            source = next((s for s in self.sources if s.name == entry.name and s.detected is not None), None)
            if source is not None and entry.format == "auto":
                entry.format, entry.recipe = source.format, source.recipe  # type: ignore[assignment]
        return updated

    def reading(self) -> dict[str, Any]:
        return {"sources": {name: read() for name, read in self.readings.items()}}


def open_mixture(layout: ProjectLayout, config: ForgeConfig, step: Callable[[str], None]) -> Mixture:
    """data.sources found, checked and their formats settled (detected where `auto`); optional sources that
    are missing are left out with a warning (the other ratios scaled to sum to 1 again)."""
    warnings: list[str] = []
    kept = []
    for entry in config.data.sources:
        path, problem = _locate(layout.root, entry.path)
        if problem is None:
            kept.append((entry, path))
            continue
        if entry.required:
            raise problem
        warnings.append(f"optional source '{entry.name}' skipped: {problem.message}")
        step(f"Warning: {warnings[-1]}")
    if not kept:
        raise ForgeError(
            "None of data.sources can be read, so there is nothing to prepare.",
            details=warnings,
            fix="Check the paths in data.sources (relative paths start at the project folder).",
            code=ErrorCode.DATA_MIXTURE_INVALID,
        )
    ratio_sum = sum(e.ratio for e, _ in kept if e.ratio is not None)
    if ratio_sum and abs(ratio_sum - 1.0) > 1e-6:  # a skipped source had a ratio: the others keep their proportions
        scaled = ", ".join(f"{e.name} {e.ratio / ratio_sum:.4g}" for e, _ in kept if e.ratio is not None)
        warnings.append(f"the ratios of the sources left were scaled to sum to 1: {scaled}")
        step(f"Warning: {warnings[-1]}")
    sources = []
    for entry, path in kept:
        ratio = entry.ratio / ratio_sum if entry.ratio is not None else None
        fmt, recipe, detected = entry.format, entry.recipe, None
        if fmt == "auto":
            from forgellm.data.prepare.detect import detect_data_format

            step(f"Detecting the data format of {entry.name}")
            _, detected = detect_data_format(layout, path, config)
            fmt, recipe = detected.format, detected.recipe
        sources.append(MixtureSource(entry.name, entry.role, path, fmt, recipe, ratio, entry.count, detected))
    _check_stage(sources, config.training.stage)
    seed = config.data.mixture_seed if config.data.mixture_seed is not None else config.preprocessing.seed
    return Mixture(sources, seed, warnings)


def _check_stage(sources: list[MixtureSource], stage: str) -> None:
    """Continued pre-training reads documents; the other stages conversations. Say which source is which."""
    cpt = stage == "cpt"
    wrong = [s for s in sources if (s.format == "text") != cpt]
    if not wrong:
        return
    names = ", ".join(f"{s.name} ({s.format})" for s in wrong)
    if cpt:
        message = f"training.stage is cpt, which trains on raw documents, but {names} hold conversations."
        fix = "Give these sources `format: text` (their text is then trained as documents), or remove them."
    else:
        message = f"training.stage is {stage}, which trains on conversations, but {names} hold raw documents."
        fix = "Set training.stage: cpt to continue pre-training on documents, or give these sources a recipe " \
              "that makes conversations (format and recipe in their data.sources entry)."
    raise ForgeError(message, fix=fix, code=ErrorCode.DATA_MIXTURE_INVALID, data={"sources": [s.name for s in wrong]})


def _locate(root: Path, text: str) -> tuple[Path, ForgeError | None]:
    """The source's path on this machine, or why it cannot be read."""
    if text.startswith(HUB_PREFIX):
        return _hub_snapshot(text)
    path = Path(text).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.exists():
        return path, ForgeError(
            f"The data source {text} does not exist ({path}).",
            fix="Correct its path in data.sources (relative paths start at the project folder), or mark the "
            "source `required: false` to prepare without it.",
            code=ErrorCode.DATA_SOURCE_MISSING,
            data={"path": str(path)},
        )
    return path.resolve(), None


def _hub_snapshot(text: str) -> tuple[Path, ForgeError | None]:
    """A hub data set is read only from the local Hugging Face cache: prepare never downloads (it must work
    offline, and a download of unknown size does not belong in a data step)."""
    repo = text.removeprefix(HUB_PREFIX).strip("/")
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    cache = Path(os.environ.get("HF_HUB_CACHE", home / "hub"))
    snapshots = cache / ("datasets--" + repo.replace("/", "--")) / "snapshots"
    found = sorted(snapshots.glob("*"), key=lambda p: p.stat().st_mtime) if snapshots.is_dir() else []
    data = _data_files(found[-1]) if found else []
    if data:
        return data[0], None
    local = "data/" + repo.rsplit("/", 1)[-1]
    return snapshots, ForgeError(
        f"The hub data set {repo} ({text}) is not on this machine, and `forge prepare` does not download data.",
        fix=f"Download it where there is internet (`huggingface-cli download --repo-type dataset {repo} "
        f"--local-dir {local}`), copy it here and set `path: {local}` — or point `path` at any local file of "
        "the same kind (JSON, JSONL, CSV, Parquet).",
        code=ErrorCode.DATA_SOURCE_OFFLINE,
        data={"id": repo, "cache": str(cache)},
    )


_DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".jsonl.gz", ".json.gz", ".csv.gz")


def _data_files(snapshot: Path) -> list[Path]:
    """A hub snapshot's data files, its train split first (the file read: one file per source)."""
    files = [p for p in snapshot.rglob("*") if p.name.lower().endswith(_DATA_SUFFIXES)]
    return sorted(files, key=lambda p: ("train" not in p.name.lower(), str(p.relative_to(snapshot))))


def record_detections(layout: ProjectLayout, mixture: Mixture) -> None:
    """The detected format and recipe of each `format: auto` source written into its data.sources entry in
    forge.yaml (after the data prepared successfully), where the user can edit them."""
    detected = {s.name: s for s in mixture.sources if s.detected is not None}
    if not detected:
        return
    from forgellm.config.io import load_config, save_config

    on_disk = load_config(layout.config_file, environ={}).config
    save_config(mixture.settled(on_disk), layout.config_file)
