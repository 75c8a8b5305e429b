"""`forge expand` for a project (or a bare file): how the file is read, which advisor writes, then expand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forgellm.synthetic.expand import ExpandReport, Progress, default_output, expand_file

SMALL_DATA_ROWS = 200  # below this many rows `forge ignite` suggests --expand


def expand_data(
    path: Path,
    target: int,
    *,
    config: Any = None,
    project_dir: Path | None = None,
    provider: str | None = None,
    goal: str | None = None,
    output: Path | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> ExpandReport:
    """Expand ``path`` to ``target`` rows. The format and recipe come from forge.yaml (or are detected, as
    `forge study` does); the advisor from forge.yaml's advisor section or ``provider`` (the rules advisor
    refuses at its first request: ADVISOR_CANNOT). ``options``: seed, batch, seeds_per_request, max_requests."""
    from forgellm.advisor.select import make_advisor
    from forgellm.config.schema import AdvisorSection
    from forgellm.errors import ErrorCode, ForgeError

    if not path.is_file():
        raise ForgeError(f"{path} is not a file.", fix="Give the path of a data file.", code=ErrorCode.FILE_NOT_FOUND,
                         data={"path": str(path)})  # fmt: skip
    section = config.advisor if config is not None else AdvisorSection()
    advisor = make_advisor(section, project_dir, provider=provider)
    fmt, recipe = _reading(path, config)
    return expand_file(
        path, target, advisor, format=fmt, recipe=recipe, goal=goal, output=output, progress=progress, **options
    )


def _reading(path: Path, config: Any) -> tuple[str, Any]:
    if config is not None and config.data.format != "auto":
        return config.data.format, config.data.recipe
    from forgellm.data.prepare.fit import settle
    from forgellm.data.read.formats import detect_format
    from forgellm.data.read.readers import open_dataset, sample_records

    dataset = open_dataset(path)
    sample = sample_records(dataset, 1000)
    limit = config.preprocessing.max_error_rate if config is not None else 0.2
    detection = settle(detect_format(sample, kind=dataset.info.kind), sample, limit)
    return detection.format, detection.recipe


def small_data_hint(path: Path, command: str) -> str | None:
    """A suggestion to expand when ``path`` is a file of fewer than SMALL_DATA_ROWS rows (``command``: how to)."""
    from forgellm.data.read.readers import estimate_rows, open_dataset
    from forgellm.errors import ForgeError

    if not path.is_file():
        return None
    try:
        rows = estimate_rows(open_dataset(path))
    except ForgeError:
        return None  # unreadable: the study says why
    if rows is None or rows >= SMALL_DATA_ROWS:
        return None
    return (
        f"{path.name} has only ~{rows:,} rows. An LLM advisor can write more in their style, kept out of val and "
        f"test: {command}"
    )


def expanded_for_ignite(path: Path, target: int, **kwargs: Any) -> tuple[Path, ExpandReport | None]:
    """The expanded file `forge ignite --expand N` trains on: made once, then reused, so a re-run resumes
    on the same data (a new expansion would be other data, and prepare would start over)."""
    output = default_output(path)
    if output.is_file() and output.stat().st_mtime >= path.stat().st_mtime:
        return output, None
    report = expand_data(path, target, output=output, **kwargs)
    if report.output is None:
        from forgellm.errors import ErrorCode, ForgeError

        raise ForgeError(
            f"None of the {report.generated:,} examples the advisor wrote was kept; nothing was written.",
            fix="Run `forge expand` alone to see the reasons, or run ignite without --expand.",
            code=ErrorCode.SYNTHETIC_NONE_KEPT,
            data={"report": report.to_dict()},
        )
    return output, report
