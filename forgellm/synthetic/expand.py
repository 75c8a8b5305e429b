"""`forge expand FILE --to N`: grow a small data set with examples an LLM advisor writes in its style.

Each request sends a few seed records (sampled with a seeded RNG) and asks for a batch of new ones in the
file's own shape (shape.py: the JSON schema of one record). Every example is checked (filters.py: shape and
recipe, length, exact and near duplicates, copying of its seeds); a kept one is marked ``synthetic: true``
with ``synthetic_seeds`` (the seeds' line numbers). The output is a new JSONL file next to the input (the
input's rows, unchanged, then the synthetic ones), written to a temporary file and renamed when complete:
the user's file is never modified. `prepare` puts synthetic rows in train only (data/prepare/splits.py).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from forgellm.data.prepare.splits import SYNTHETIC_FIELD  # the mark prepare's split rule reads
from forgellm.errors import ErrorCode, ForgeError
from forgellm.synthetic.filters import REASONS, SyntheticFilter
from forgellm.synthetic.shape import example_model, recipe_columns, seed_fields

SEEDS_FIELD = "synthetic_seeds"
DEFAULT_BATCH = 8  # examples asked for per request
DEFAULT_SEEDS = 4  # seed records shown per request
REQUESTS_PER_BATCH_NEEDED = 5  # give up after this many times the requests a perfect advisor would need
LENGTH_MARGIN = (0.5, 2)  # kept lengths: from half the data's shortest to twice its longest (in characters)
DROPPED_EXAMPLES = 10  # dropped examples kept in the report, with their reason
Progress = Callable[[int, int, int], None]  # (kept, wanted, generated)


@dataclass
class ExpandReport:
    """What an expansion asked for, got, kept and dropped (by reason); ``output`` None when nothing was written."""

    input: str
    output: str | None
    format: str
    advisor: str
    original_rows: int
    target: int
    wanted: int
    requests: int = 0
    unusable_answers: int = 0  # answers that were not JSON of the asked shape at all
    generated: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    dropped_examples: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str | None = None  # why it ended before reaching the target
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_output(path: Path) -> Path:
    name = path.name.removesuffix(".gz")
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return path.with_name(f"{stem}.expanded.jsonl")


def expand_file(
    path: Path,
    target: int,
    advisor: Any,
    *,
    format: str,
    recipe: Any,
    goal: str | None = None,
    seed: int = 0,
    batch: int = DEFAULT_BATCH,
    seeds_per_request: int = DEFAULT_SEEDS,
    output: Path | None = None,
    progress: Progress | None = None,
    max_requests: int | None = None,
) -> ExpandReport:
    """Write ``output`` (default: ``<stem>.expanded.jsonl`` beside ``path``) with the rows of ``path`` and
    synthetic ones up to ``target`` rows in all. ``format``/``recipe``: how prepare will read the file.
    ``max_requests``: a cap on requests (each costs tokens); default 5 x the requests a perfect advisor needs."""
    from forgellm.advisor.errors import AdvisorAnswerError, AdvisorUnavailable
    from forgellm.advisor.schemas import ExamplesRequest

    started = time.monotonic()
    output = output or default_output(path)
    if output.resolve() == path.resolve():
        raise ForgeError(f"The output {output} is the input file.", fix="Choose another --output.",
                         code=ErrorCode.USAGE_INVALID)  # fmt: skip
    rows, usable, checker = _read(path, format, recipe)
    if target <= len(rows):
        raise ForgeError(
            f"{path.name} already has {len(rows):,} rows; --to {target:,} would add none.",
            fix=f"Ask for more rows than the file has, e.g. --to {max(2 * len(rows), len(rows) + 10):,}.",
            code=ErrorCode.USAGE_INVALID,
        )
    report = ExpandReport(str(path), None, format, getattr(advisor, "name", "?"), len(rows), target, target - len(rows))
    columns = recipe_columns(recipe)
    seeds_all = [seed_fields(fields, columns) for _, fields in usable]
    schema = example_model(seeds_all, columns)
    checker.schema = schema
    rng = random.Random(seed)
    kept_rows: list[dict[str, Any]] = []
    max_requests = max_requests or math.ceil(report.wanted / batch) * REQUESTS_PER_BATCH_NEEDED + 2
    while report.kept < report.wanted and report.requests < max_requests:
        picked = rng.sample(range(len(usable)), min(seeds_per_request, len(usable)))
        lines = [usable[i][0] for i in picked]
        count = min(batch, report.wanted - report.kept)
        request = ExamplesRequest([seeds_all[i] for i in picked], count, format, schema, goal)
        report.requests += 1
        try:
            proposal = advisor.write_examples(request)
        except AdvisorAnswerError as exc:
            report.unusable_answers += 1
            _note_drop(report, "answer", exc.message)
            continue
        except AdvisorUnavailable as exc:
            report.stopped = f"the advisor became unavailable: {exc.message}"
            break
        seeds = checker.seeds([usable[i][1] for i in picked])
        kept_rows += _check_all(report, proposal.examples, checker, seeds, lines)
        if progress is not None:
            progress(report.kept, report.wanted, report.generated)
    if report.kept < report.wanted and report.stopped is None:
        report.stopped = f"gave up after {report.requests} requests"
    report.notes = list(getattr(advisor, "notes", []))
    if kept_rows:
        _write(output, rows, kept_rows)
        report.output = str(output)
    report.seconds = round(time.monotonic() - started, 2)
    return report


def _check_all(
    report: ExpandReport, candidates: list[Any], checker: SyntheticFilter, seeds: Any, lines: list[int]
) -> list[dict[str, Any]]:
    """The candidates that pass every check, marked; each one checked is counted in ``report``."""
    kept: list[dict[str, Any]] = []
    for candidate in candidates:
        if report.kept >= report.wanted:
            break
        report.generated += 1
        verdict = checker.check(candidate, seeds)
        if verdict.reason is not None:
            report.dropped[verdict.reason] += 1
            _note_drop(report, verdict.reason, verdict.detail)
            continue
        checker.remember(verdict.content)  # later examples may not repeat it
        kept.append({**candidate, SYNTHETIC_FIELD: True, SEEDS_FIELD: lines})
        report.kept += 1
    return kept


Rows = list[tuple[int, dict[str, Any]]]  # (line, fields)


def _read(path: Path, format: str, recipe: Any) -> tuple[Rows, Rows, SyntheticFilter]:
    """(every readable row, the rows the recipe makes examples of, a filter that knows them all)."""
    from forgellm.data.read.readers import open_dataset
    from forgellm.data.read.records import RecipeError, Record

    dataset = open_dataset(path)
    if dataset.info.kind == "text" or format in ("text", "thread"):
        raise ForgeError(
            f"{path.name} is read as {'documents' if format == 'text' else 'reply threads'}; "
            "`forge expand` writes records (rows of a table, JSON objects) only.",
            fix="Expand a CSV, JSON, JSONL or Parquet file of examples (question/answer, instruction, messages ...).",
            code=ErrorCode.SYNTHETIC_UNSUPPORTED,
        )
    checker = SyntheticFilter(None, format, recipe, min_chars=0, max_chars=0)  # type: ignore[arg-type]
    rows: Rows = []
    usable: Rows = []
    lengths: list[int] = []
    for item in dataset:
        if not isinstance(item, Record):
            continue  # unreadable: left out of the output, as prepare would reject it
        rows.append((item.line, item.fields))
        try:
            text = checker.content(item.fields, item.line)
        except RecipeError:
            continue
        usable.append((item.line, item.fields))
        lengths.append(len(text))
        checker.remember(text)
    if not usable:
        raise ForgeError(
            f"No row of {path.name} makes a training example with the {format} recipe, so there is no seed.",
            fix="Run `forge study FILE` to see how the file is read, and set data.format / data.recipe in forge.yaml.",
            code=ErrorCode.DATA_RECIPE_MISMATCH,
        )
    # The data's observed range, with a margin: a small data set has not shown every length it could hold.
    checker.min_chars, checker.max_chars = math.ceil(min(lengths) * LENGTH_MARGIN[0]), max(lengths) * LENGTH_MARGIN[1]
    return rows, usable, checker


def _note_drop(report: ExpandReport, reason: str, detail: str) -> None:
    if len(report.dropped_examples) < DROPPED_EXAMPLES:
        report.dropped_examples.append({"reason": reason, "detail": detail[:300]})


def _write(output: Path, rows: Rows, synthetic: list[dict[str, Any]]) -> None:
    """The input's rows then the synthetic ones, as JSONL; renamed into place only when complete."""
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            for _, fields in rows:
                handle.write(json.dumps(fields, ensure_ascii=False, default=str) + "\n")
            for row in synthetic:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
