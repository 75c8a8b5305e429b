"""The record of prepared data: a published folder data/prepared/<fingerprint>/ as one `PreparedData`,
read from its manifest.json (what was read, with which settings and tokenizer: `Manifest`, written by
`forge prepare` after every chunk) and its stats.json (`PreparedStats`, written once when it publishes)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from forgellm.project.layout import PreparedLayout, ProjectLayout
from forgellm.project.manifest import Manifest
from forgellm.project.record_io import (
    RECORD_VERSION,
    as_dict,
    as_int,
    known_fields,
    read_object,
    write_object,
)


@dataclass
class SplitCounts:
    """One split of the prepared data (train, val or test)."""

    examples: int = 0
    tokens: int = 0
    trained_tokens: int = 0  # tokens the loss is computed on (assistant turns, or all for cpt)
    max_length: int = 0  # the longest example, in tokens

    @classmethod
    def from_dict(cls, data: Any) -> SplitCounts:
        data = as_dict(data)
        names = ("examples", "tokens", "trained_tokens", "max_length")
        return cls(**{key: as_int(data.get(key)) or 0 for key in names})


@dataclass
class PreparedStats:
    """stats.json: what a preparation produced and decided (counts, format, stage, model, template,
    max_length), and how long it took."""

    input: dict[str, Any] = field(default_factory=dict)  # the manifest's input fingerprint (path, bytes, sha256)
    format: str | None = None
    stage: str | None = None
    model: str | None = None  # forge.yaml's model.ref
    template: str | None = None  # the chat template's resolved name
    template_sha256: str | None = None  # of the exact template text (the manifest holds the text)
    tokenizer: str | None = None  # the tokenizer id (as in the manifest)
    max_length: int | None = None
    rows_read: int = 0
    kept: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    truncated_lost_stop_token: int = 0
    splits: dict[str, SplitCounts] = field(default_factory=dict)
    chunk_rows: int | None = None
    chunks: int = 0
    seconds_by_stage: dict[str, float] = field(default_factory=dict)
    bottleneck: str | None = None
    seconds_total_this_run: float | None = None
    peak_rss_mb: float | None = None
    warnings: list[str] = field(default_factory=list)
    # How the input was read: encoding, empty spill columns dropped, blank rows skipped (Dataset.reading()).
    reading: dict[str, Any] = field(default_factory=dict)
    # A mixture (data.sources): per source {role, path, format, ratio | count, available, train, val, test,
    # used}, and how the counts were set {seed, train_total, limited_by, note}. Empty for one data.source.
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    mixture: dict[str, Any] = field(default_factory=dict)
    # Tokens (exact), words, lines, characters, pages and the method (data/token_stats.TextStats.to_dict()).
    text: dict[str, Any] = field(default_factory=dict)
    version: int = RECORD_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreparedStats:
        stats = known_fields(cls, data)
        stats.splits = {str(name): SplitCounts.from_dict(split) for name, split in as_dict(stats.splits).items()}
        for name in ("rows_read", "kept", "rejected", "truncated", "truncated_lost_stop_token", "chunks"):
            setattr(stats, name, as_int(getattr(stats, name)) or 0)
        stats.max_length = as_int(stats.max_length)
        stats.rejected_by_reason = as_dict(stats.rejected_by_reason)
        stats.input = as_dict(stats.input)
        stats.reading = as_dict(stats.reading)
        stats.sources = as_dict(stats.sources)
        stats.mixture = as_dict(stats.mixture)
        stats.text = as_dict(stats.text)
        return stats

    def save(self, folder: PreparedLayout) -> None:
        write_object(folder.stats, self.to_dict())

    @classmethod
    def load(cls, folder: PreparedLayout) -> PreparedStats | None:
        """None when stats.json is missing or damaged."""
        data = read_object(folder.stats)
        return cls.from_dict(data) if data is not None else None

    def examples(self) -> dict[str, int]:
        return {name: split.examples for name, split in self.splits.items()}

    @property
    def trained_tokens(self) -> int:
        return sum(split.trained_tokens for split in self.splits.values())


@dataclass
class PreparedData:
    """One prepared folder: its manifest and stats. The only way a later stage (train, eval, export,
    status) learns what `forge prepare` decided."""

    layout: PreparedLayout
    manifest: Manifest
    stats: PreparedStats | None  # None while the preparation is unfinished, or when stats.json is damaged

    @property
    def folder(self) -> Path:
        return self.layout.folder

    @property
    def fingerprint(self) -> str:
        return self.layout.name

    @property
    def complete(self) -> bool:
        return self.manifest.complete is True

    @property
    def tokenizer_id(self) -> str:
        return self.manifest.tokenizer

    @property
    def settings_fingerprint(self) -> str:
        return self.manifest.settings_fingerprint

    @property
    def format(self) -> str:
        return self.manifest.format

    def examples(self) -> dict[str, int]:
        """Examples per split; {} without stats."""
        return self.stats.examples() if self.stats else {}

    @property
    def rejected(self) -> int | None:
        return self.stats.rejected if self.stats else None

    @property
    def stage(self) -> str | None:
        return self.stats.stage if self.stats else None

    @property
    def model(self) -> str | None:
        return self.stats.model if self.stats else None

    @property
    def template(self) -> str | None:
        return self.stats.template if self.stats else None

    @property
    def max_length(self) -> int | None:
        """model.max_length the examples were cut to (stats.json holds it for data prepared before the
        manifest did)."""
        if self.manifest.max_length:
            return int(self.manifest.max_length)
        return self.stats.max_length if self.stats else None

    @property
    def chat_template(self) -> dict[str, str] | None:
        """The exact template the data was rendered with ({name, text, sha256}); None for older data."""
        return self.manifest.chat_template

    @classmethod
    def load(cls, folder: Path | PreparedLayout) -> PreparedData | None:
        """The record of `folder`; None when its manifest.json is missing or damaged (not a preparation)."""
        layout = folder if isinstance(folder, PreparedLayout) else PreparedLayout(Path(folder))
        manifest = Manifest.load(layout.folder)
        if manifest is None:
            return None
        return cls(layout, manifest, PreparedStats.load(layout))

    def written_at(self) -> float:
        """When the manifest was last written (a preparation's last finished chunk or its publication)."""
        try:
            return self.layout.manifest.stat().st_mtime
        except OSError:
            return 0.0


def prepared_folders(project: ProjectLayout) -> list[PreparedLayout]:
    """Every folder under data/prepared/ that is not a preparation in progress, newest manifest first."""
    root = project.prepared_dir
    if not root.is_dir():
        return []
    folders = [PreparedLayout(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]

    def written(folder: PreparedLayout) -> float:
        try:
            return folder.manifest.stat().st_mtime
        except OSError:
            return folder.folder.stat().st_mtime

    return sorted(folders, key=written, reverse=True)


def published_data(project: ProjectLayout) -> list[PreparedData]:
    """Every complete (published) preparation of the project, newest first."""
    found = [PreparedData.load(folder) for folder in prepared_folders(project)]
    return [data for data in found if data is not None and data.complete]
