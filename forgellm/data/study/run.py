"""`forge study FILE`: read (a sample of) the data, profile it, and write reports/study.{html,json}."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgellm.data.read.records import BadRow, Record
from forgellm.project.layout import ProjectLayout

DEFAULT_SAMPLE_ROWS = 20_000


@dataclass
class StudyRun:
    report: Any  # forgellm.data.study.profile.StudyReport
    info: dict[str, Any]  # the reader's DatasetInfo as a dict
    detection: dict[str, Any]
    html_path: Path
    json_path: Path
    token_source: str  # "model:<ref>", "local:<name>" or "estimate:words" (data/token_stats.py)

    def to_dict(self) -> dict[str, Any]:
        return {
            "report": self.report.to_dict(),
            "input": self.info,
            "detection": self.detection,
            "html": str(self.html_path),
            "json": str(self.json_path),
        }


def _spread(items: Iterator[Record | BadRow], every: int) -> Iterator[Record | BadRow]:
    """Every n-th item, so a sample covers the whole file (files are often sorted by label or date)."""
    return itertools.islice(items, 0, None, every) if every > 1 else items


def _plan_context(config: Any, progress_step: Callable[[str], None]) -> tuple[Any, int | None]:
    """(token counting, max_length): the project's model when there is a forge.yaml, else the fallback chain
    of data/token_stats.py (another local tokenizer, else the word estimate)."""
    from forgellm.data.token_stats import token_counting

    ref = config.model.ref if config is not None else None
    counting = token_counting(ref, progress=progress_step)
    return counting, config.model.max_length if config is not None else None


def study_file(
    layout: ProjectLayout | None,
    config: Any,
    path: Path,
    *,
    full: bool = False,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
    step: Callable[[str], None] | None = None,
    rows: Callable[[int, int | None], None] | None = None,
) -> StudyRun:
    """Study `path` for the project (`layout` None: the current folder; `config` None: no forge.yaml yet, so
    the format is detected and tokens are estimated)."""
    from forgellm.data.read.formats import detect_format
    from forgellm.data.read.readers import estimate_rows, open_dataset, sample_records
    from forgellm.data.study.html import write_study_html, write_study_json
    from forgellm.data.study.profile import study_dataset

    step = step or (lambda _message: None)
    dataset = open_dataset(path)
    counting, max_length = _plan_context(config, step)
    if config is not None and config.data.format != "auto":
        from forgellm.data.read.detection import Detection

        detection = Detection(config.data.format, config.data.recipe, 1.0, ["from forge.yaml"], [])
    else:
        from forgellm.data.prepare.fit import settle

        sample = sample_records(dataset, 1000)
        limit = config.preprocessing.max_error_rate if config is not None else 0.2
        detection = settle(detect_format(sample, kind=dataset.info.kind), sample, limit)
    estimate = estimate_rows(dataset)
    every = 1 if full or not estimate or estimate <= sample_rows else -(-estimate // sample_rows)
    note = None
    if every > 1:
        note = (
            f"Studied every {every}th row (~{estimate // every:,} of ~{estimate:,} rows) so the sample spans "
            "the whole file; run with --full to study every row."
        )
    items = _spread(iter(dataset), every)
    if detection.format == "thread":  # study the conversations the reply links make, as prepare will
        from forgellm.data.read.threads import link_threads

        items = link_threads(iter(dataset), detection.recipe)
    target = estimate // every if estimate else None
    report = study_dataset(
        items,
        detection=detection,
        counting=counting,
        max_length=max_length,
        sample_note=note,
        progress=(lambda n: rows(n, target)) if rows else None,
        reading=dataset.reading,
    )
    report.shape = detection.to_dict()
    layout = layout or ProjectLayout(Path("."))
    html_path, json_path = layout.study_html, layout.study_json
    write_study_json(report, json_path)
    write_study_html(report, html_path, title=f"Data study: {path.name}")
    source = report.to_dict().get("token_counter", "")
    return StudyRun(report, dataset.info.to_dict(), detection.to_dict(), html_path, json_path, source)
