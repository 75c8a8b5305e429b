"""`forge expand FILE --to N`: synthetic examples written by the LLM advisor, checked, in a new file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from forgellm.cli.app import app
from forgellm.cli.output import console, count_rate, print_json, rate_progress
from forgellm.cli.plan_cmds import AdvisorChoice


@app.command()
def expand(
    file: Path = typer.Argument(..., help="The data to grow (CSV, JSON, JSONL or Parquet of examples)."),
    to: int = typer.Option(..., "--to", min=2, help="Rows the new file holds in all: the data's plus synthetic ones."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Default: <name>.expanded.jsonl beside FILE."),
    goal: str | None = typer.Option(None, "--goal", help="What the data is for, told to the advisor."),
    advisor: AdvisorChoice | None = typer.Option(None, "--advisor", help="gemini or openai (rules cannot write)."),
    batch: int = typer.Option(8, "--batch", min=1, max=32, help="Examples asked for per request."),
    seeds: int = typer.Option(4, "--seeds", min=1, max=16, help="Seed records shown per request."),
    seed: int = typer.Option(0, "--seed", help="Seed of the choice of seed records."),
    max_requests: int | None = typer.Option(
        None, "--max-requests", min=1, help="At most this many requests (default: 5 x what N needs at best)."
    ),
    project: Path = typer.Option(Path("."), "--project", "-C", help="Project folder: its advisor and recipe."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """New examples in the style of your data, written by the LLM advisor: checked, marked synthetic, train only."""
    from forgellm.errors import ErrorCode, ForgeError
    from forgellm.project import find_project, load_project
    from forgellm.synthetic.run import expand_data

    layout, config = load_project(project) if find_project(project) else (None, None)
    options = {"seed": seed, "batch": batch, "seeds_per_request": seeds, "max_requests": max_requests}
    kwargs: dict[str, Any] = dict(config=config, project_dir=layout.root if layout else None, goal=goal,
                                  provider=advisor.value if advisor else None, output=output, **options)  # fmt: skip
    if as_json:
        report = expand_data(file, to, **kwargs)
    else:
        with rate_progress(console, unit="examples") as bar:
            task = bar.add_task("Writing examples", total=None)
            started = time.perf_counter()

            def moved(kept: int, wanted: int, generated: int) -> None:
                bar.update(task, completed=kept, total=wanted, rate=count_rate(kept, started))

            report = expand_data(file, to, progress=moved, **kwargs)
    if as_json:
        print_json(report.to_dict())
    else:
        _render(report)
    if report.output is None:
        raise ForgeError(
            f"None of the {report.generated:,} examples the advisor wrote was kept; nothing was written.",
            fix="Look at the reasons above; try a larger advisor model (advisor.model), more --seeds, or run again "
            "with another --seed.",
            code=ErrorCode.SYNTHETIC_NONE_KEPT,
            data={"report": report.to_dict()},
        )


def _render(report: Any) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title=f"forge expand ({report.advisor} advisor, {report.format})", box=box.SIMPLE_HEAD,
                  show_header=False)  # fmt: skip
    table.add_column("", style="bold")
    table.add_column("", overflow="fold")
    table.add_row("Rows", f"{report.original_rows:,} in the data, {report.wanted:,} wanted to reach {report.target:,}")
    table.add_row("Requests", f"{report.requests:,} ({report.unusable_answers:,} answers unusable as a whole)")
    table.add_row("Generated", f"{report.generated:,} examples in {report.seconds:,.1f} s")
    table.add_row("Kept", f"[green]{report.kept:,}[/]")
    dropped = ", ".join(f"{reason.replace('_', ' ')} {n:,}" for reason, n in report.dropped.items())
    table.add_row("Dropped", f"{sum(report.dropped.values()):,}: {dropped}")
    console.print(table)
    for example in report.dropped_examples[:5]:
        console.print(f"[dim]dropped ({example['reason']}): {example['detail']}[/]", soft_wrap=True)
    for note in report.notes:
        console.print(f"[dim]advisor: {note}[/]", soft_wrap=True)
    if report.stopped:
        console.print(f"[yellow]Stopped short of {report.target:,} rows: {report.stopped}.[/]")
    if report.output:
        console.print(f"Wrote [bold]{report.output}[/] (synthetic rows marked `synthetic: true`, train split only).")
        console.print(f"Next: [bold]forge prepare {report.output}[/]")
