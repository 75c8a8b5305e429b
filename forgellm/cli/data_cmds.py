"""`forge prepare` (and `forge study`): the data commands."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from forgellm.cli.app import app
from forgellm.cli.output import console, count_rate, err_console, print_json, rate_progress
from forgellm.cli.runtime_opt import choose, run_in_container, runtime_option
from forgellm.runtime.container import local_model


@app.command()
def prepare(
    file: Path | None = typer.Argument(
        None,
        help="The data: CSV, TSV, JSON, JSONL, Parquet (optionally .gz), text or folder. Without it: the mixture "
        "of forge.yaml's data.sources.",
    ),
    project: Path = typer.Option(Path("."), "--project", "-C", help="The project folder (holds forge.yaml)."),
    show_recipe: bool = typer.Option(False, help="Print the recipe (detected or from forge.yaml) and stop."),
    restart: bool = typer.Option(False, help="Discard an interrupted preparation instead of resuming it."),
    chunk_rows: int | None = typer.Option(None, min=1, help="Rows per chunk (default: from free memory)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    script: str | None = typer.Option(
        None, help="Have the advisor write a sandboxed Python script for this transformation, in plain words."
    ),
    allow_unsandboxed: bool = typer.Option(
        False, help="Run a --script even when no sandbox (bubblewrap, Docker) is available: limits only."
    ),
    runtime: str | None = runtime_option(),  # type: ignore[assignment]
) -> None:
    """Turn raw data into train/val/test examples in the model's chat template, with assistant-only labels."""
    from forgellm.data.prepare.detect import detect_recipe
    from forgellm.data.prepare.run import load_project_config, prepare_dataset
    from forgellm.project import ProjectLayout, find_project

    layout = ProjectLayout((find_project(project) or project).resolve())
    config = load_project_config(layout.root)
    if file is None and (show_recipe or script is not None):
        from forgellm.errors import ErrorCode, ForgeError

        raise ForgeError(
            "--show-recipe and --script work on one file.",
            fix="Name the file: `forge prepare FILE --show-recipe` (a mixture's detected recipes are written into "
            "its data.sources entries when it is prepared).",
            code=ErrorCode.USAGE_INVALID,
        )
    if script is None:  # a --script runs in its own sandbox, on this machine
        choice = choose(runtime, config.runtime, "Preparing the data", gpu_work=False, quiet=as_json)
        if choice.name == "docker":
            data = [file.resolve()] if file is not None else _source_paths(layout.root, config)
            args = [*([str(data[0])] if file is not None else []), "-C", str(layout.root)]
            args += ["--show-recipe"] if show_recipe else []
            args += [*(["--restart"] if restart else []), *(["--json"] if as_json else [])]
            args += ["--chunk-rows", str(chunk_rows)] if chunk_rows else []
            run_in_container(choice, "prepare", args, layout.root, [*data, *local_model(config.model.ref, layout.root)])
    if script is not None:
        _prepare_scripted(layout, config, file, script, allow_unsandboxed, restart, chunk_rows, as_json)
        return
    if show_recipe and file is not None:
        if config.data.format == "auto":
            config, detection = detect_recipe(layout, file.resolve(), config)
            if not as_json:
                console.print(
                    f"Detected [bold]{detection.format}[/] (confidence {detection.confidence:.0%}); "
                    "saved to forge.yaml — edit `data:` there to change it."
                )
        _show_recipe(config, as_json)
        return
    if as_json:
        result = prepare_dataset(layout, config, file, restart=restart, chunk_rows=chunk_rows)
        print_json(result.to_dict())
        return
    with _progress() as hooks:
        result = prepare_dataset(layout, config, file, restart=restart, chunk_rows=chunk_rows, hooks=hooks)
    _render_result(result)


def _source_paths(root: Path, config: Any) -> list[Path]:
    """The local paths of data.sources (mounted into a container); hub ids and missing paths are left to
    prepare, which says what is wrong with them."""
    paths = [Path(s.path).expanduser() for s in config.data.sources if not s.path.startswith("hf:")]
    found = [p if p.is_absolute() else root / p for p in paths]
    return [p.resolve() for p in found if p.exists()]


def _prepare_scripted(
    layout: Any, config: Any, file: Path, script: str, allow_unsandboxed: bool, restart: bool,
    chunk_rows: int | None, as_json: bool,
) -> None:  # fmt: skip
    from forgellm.advisor.scripts import prepare_with_script

    if as_json:
        run, result = prepare_with_script(
            layout, config, file, script, allow_unsandboxed=allow_unsandboxed, restart=restart, chunk_rows=chunk_rows
        )
        print_json({"script": run.to_dict(), **result.to_dict()})
        return
    with _progress() as hooks:
        run, result = prepare_with_script(
            layout, config, file, script, allow_unsandboxed=allow_unsandboxed, restart=restart,
            chunk_rows=chunk_rows, hooks=hooks,
        )  # fmt: skip
    for note in run.notes:
        console.print(f"[dim]{note}[/]")
    for warning in run.warnings:
        err_console.print(f"[bold red]warning[/] {warning}")
    console.print(f"Script: [bold]{run.script_path}[/] (ran in {run.sandbox.runtime}, {run.sandbox.duration:.1f}s)")
    if run.explanation:
        console.print(f"[dim]{run.explanation}[/]")
    console.print(f"Wrote {run.rows_written:,} conversations to {run.output_path}")
    if run.invalid_lines:
        console.print(f"[yellow]Skipped {run.invalid_lines:,} invalid lines:[/] " + "; ".join(run.problems[:3]))
    _render_result(result)


@app.command()
def study(
    file: Path = typer.Argument(..., help="The data to study (any format `forge prepare` reads)."),
    project: Path = typer.Option(Path("."), "--project", "-C", help="Project folder; its model counts tokens."),
    full: bool = typer.Option(False, help="Study every row (default: a sample spread over big files)."),
    sample_rows: int = typer.Option(20_000, min=100, help="Rows to study in a big file without --full."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """A data quality report: duplicates, encoding, placeholders, PII, lengths, labels — with fixes."""
    from forgellm.data.study.html import render_study_terminal
    from forgellm.data.study.run import study_file
    from forgellm.project import find_project, load_project

    # Inside a project the study counts the target model's tokens; outside one it estimates them.
    layout, config = load_project(project) if find_project(project) else (None, None)
    if as_json:
        run = study_file(layout, config, file, full=full, sample_rows=sample_rows)
        print_json(run.to_dict())
        return
    with _progress() as hooks:
        run = study_file(layout, config, file, full=full, sample_rows=sample_rows, step=hooks.step, rows=hooks.rows)
    render_study_terminal(run.report, console)
    _print_detection(run.detection)
    console.print(f"Reports: {run.html_path} (open in a browser) and {run.json_path}")


def _print_detection(detection: dict[str, Any]) -> None:
    """The shape study settled on, why, and the other readings it weighed with their scores."""
    from rich.markup import escape

    console.print(
        f"Shape: [bold]{escape(detection['format'])}[/] (score {detection['confidence']:.2f}) — "
        + escape("; ".join(detection["reasons"][:3]))
    )
    for warning in detection.get("warnings", [])[:3]:
        console.print(f"  [yellow]![/] {escape(warning)}")
    for other in detection.get("alternatives", [])[:4]:
        console.print(f"  also considered: {escape(other['shape'])} (score {other['confidence']:.2f}) — "
                      f"{escape(other['why'])}")  # fmt: skip


def _show_recipe(config: Any, as_json: bool) -> None:
    data = {
        "format": config.data.format,
        "recipe": config.data.recipe.model_dump(mode="json"),
        "stage": config.training.stage,
        "rationale": config.data.rationale,
    }
    if as_json:
        print_json(data)
        return
    import yaml
    from rich.syntax import Syntax

    console.print(
        Syntax(
            yaml.safe_dump(
                {"data": {"format": data["format"], "recipe": data["recipe"]}}, sort_keys=False, allow_unicode=True
            ),
            "yaml",
            background_color="default",
        )
    )
    if data["rationale"]:
        console.print(f"[dim]{data['rationale']}[/]")


class _progress:
    """Rich progress for prepare: steps as lines, rows with rows/s while chunks are processed."""

    def __enter__(self):
        from forgellm.data.prepare.run import PrepareHooks

        self.progress = rate_progress(err_console, unit="rows")
        self.progress.start()
        self.task = self.progress.add_task("Starting", total=None)
        self.started: float | None = None
        self.step_started = time.perf_counter()

        def step(message: str) -> None:
            self.progress.console.print(f"  [dim]{message}[/]")
            self.progress.update(self.task, description=message)
            self.step_started = time.perf_counter()

        def rows(done: int, total: int | None) -> None:
            # Rows are counted from the step that started them ("Preparing in chunks"), not from the first
            # report, which comes only once a whole chunk is done.
            self.started = self.started or self.step_started
            rate = count_rate(done, self.started)
            self.progress.update(self.task, completed=done, total=total, description="Rows", rate=rate)

        return PrepareHooks(step=step, rows=rows)

    def __exit__(self, *exc_info) -> None:
        self.progress.stop()


def _render_result(result: Any) -> None:
    from rich.table import Table

    from forgellm.project.layout import PreparedLayout

    stats = result.stats
    if result.already_prepared:
        console.print(f"Already prepared with these settings: [bold]{result.output_dir}[/]")
    table = Table(title=f"Prepared {stats.rows_read:,} rows → {result.output_dir.name}")
    for column in ("split", "examples", "tokens", "trained tokens", "longest"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split, counts in stats.splits.items():
        table.add_row(
            split,
            f"{counts.examples:,}",
            f"{counts.tokens:,}",
            f"{counts.trained_tokens:,}",
            f"{counts.max_length:,}",
        )
    console.print(table)
    if stats.sources:
        _render_sources(stats)
    if stats.text:
        from forgellm.data.token_stats import text_totals

        console.print(f"Totals: {text_totals(stats.text)}")
    if stats.rejected:
        console.print(f"Rejected {stats.rejected:,} rows (see {PreparedLayout(result.output_dir).rejects}):")
        for reason, count in list(stats.rejected_by_reason.items())[:8]:
            console.print(f"  {count:>7,}  {reason}")
    skipped = stats.reading.get("blank_rows", 0)
    dropped = stats.reading.get("dropped_columns") or []
    if skipped or dropped:
        console.print(
            f"Skipped {skipped:,} blank rows"
            + (f"; dropped {len(dropped)} empty spill column(s) ({', '.join(dropped[:5])})" if dropped else "")
            + "."
        )
    if stats.truncated:
        console.print(
            f"Truncated {stats.truncated:,} examples to {stats.max_length} tokens "
            f"({stats.truncated_lost_stop_token:,} lost their stop token)."
        )
    for check in result.checks:
        mark = "[green]✓[/]" if check["ok"] else "[red]✗[/]"
        console.print(f"{mark} {check['name']}: [dim]{check['detail']}[/]")
    seconds = stats.seconds_by_stage
    if seconds:
        parts = ", ".join(f"{stage} {value:.1f}s" for stage, value in seconds.items())
        console.print(
            f"[dim]Time by stage: {parts}; bottleneck: {stats.bottleneck}; peak memory {stats.peak_rss_mb:,.0f} MB.[/]"
        )
    for warning in stats.warnings:
        console.print(f"[yellow]warning[/] {warning}")


def _render_sources(stats: Any) -> None:
    """A mixture's sources: role, what was asked, examples per split, used of available; and how."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Sources (data.sources)")
    for column in ("source", "role", "asked", "train", "val", "test", "used / available"):
        table.add_column(column, justify="left" if column in ("source", "role") else "right")
    for name, source in stats.sources.items():
        asked = f"ratio {source['ratio']:.4g}" if source.get("ratio") is not None else f"count {source.get('count')}"
        table.add_row(
            escape(name), source.get("role", ""), asked,
            *(f"{source.get(split, 0):,}" for split in ("train", "val", "test")),
            f"{source.get('used', 0):,} / {source.get('available', 0):,}",
        )  # fmt: skip
    console.print(table)
    if stats.mixture.get("note"):
        console.print(f"[dim]{escape(stats.mixture['note'])}[/]")
