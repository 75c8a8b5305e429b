"""`forge eval`: the base model against the fine-tuned one on held-out data, as a table and a report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from forgellm.cli.main import app
from forgellm.cli.output import StageBar, console, err_console, print_json


@app.command("eval")
def eval_command(
    run: str | None = typer.Option(None, "--run", help="The run to evaluate (id or folder; default: the newest)."),
    samples: int = typer.Option(8, "--samples", min=0, help="Test conversations both models answer."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=1, help="Longest answer, in tokens."),
    max_examples: int = typer.Option(200, "--max-examples", min=1, help="Test examples scored for loss."),
    judge: bool | None = typer.Option(
        None, "--judge/--no-judge", help="LLM judge through the advisor (default: when it is gemini or openai)."
    ),
    project: Path = typer.Option(Path("."), "--project", "-C", help="The project folder (holds forge.yaml)."),
    as_json: bool = typer.Option(False, "--json", help="Print reports/eval.json's content (no live display)."),
) -> None:
    """Base vs fine-tuned on the test split: loss, perplexity, answers side by side, ROUGE-L, chrF, stop rate."""
    from forgellm.evaluation import evaluate_run
    from forgellm.project import require_project

    root = require_project(project)
    options = {"samples": samples, "max_new_tokens": max_new_tokens, "max_examples": max_examples, "judge": judge}
    if as_json:
        print_json(evaluate_run(root, run, **options).to_dict())
        return
    with _EvalDisplay() as display:
        result = evaluate_run(root, run, progress=display.progress(), **options)
    _render(result.to_dict(), root)


class _EvalDisplay(StageBar):
    """A line per finished stage; a bar with speed and time left while examples or answers are counted."""

    def __init__(self) -> None:
        super().__init__(err_console, unit="examples", bar_width=24)

    def progress(self) -> Any:
        from forgellm.evaluation import EvalProgress

        return EvalProgress(stage=self.stage, advance=lambda unit, done, total: self.advance(done, total, unit))


def _num(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "–"


def _delta(base: Any, tuned: Any, spec: str, lower_is_better: bool) -> str:
    if not isinstance(base, (int, float)) or not isinstance(tuned, (int, float)):
        return "–"
    change = tuned - base
    better = change < 0 if lower_is_better else change > 0
    colour = "green" if better else ("red" if change else "dim")
    return f"[{colour}]{change:+{spec}}[/]"


_ROWS = (  # key, label, format, lower is better
    ("loss", "Test loss", ".4f", True),
    ("perplexity", "Perplexity", ".2f", True),
    ("stop_rate", "Stop rate", ".0%", False),
    ("exact_match", "Exact match", ".0%", False),
    ("rouge_l", "ROUGE-L", ".3f", False),
    ("chrf", "chrF", ".1f", False),
)


def _render(data: dict[str, Any], root: Path) -> None:
    from rich.markup import escape
    from rich.table import Table

    summary, settings = data["summary"], data["settings"]
    for warning in data["warnings"]:
        err_console.print(f"[yellow]Warning:[/] {escape(warning)}", soft_wrap=True)
    for note in data["notes"]:
        err_console.print(f"[dim]{escape(note)}[/]", soft_wrap=True)
    console.print(
        f"[bold]Run {data['run_id']}[/] ({data['checkpoint']}) against its base model {escape(data['base_model'])}"
    )
    table = Table()
    for column, justify in (("metric", "left"), ("base", "right"), ("fine-tuned", "right"), ("change", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    base, tuned = summary["base"], summary["tuned"]
    for key, label, spec, lower in _ROWS:
        table.add_row(label, _num(base[key], spec), _num(tuned[key], spec), _delta(base[key], tuned[key], spec, lower))
    console.print(table)
    win = summary["judge_win_rate"]
    judged = data.get("judge") or {}
    if win is not None:
        console.print(
            f"LLM judge ({escape(judged.get('model', ''))}): the fine-tuned model wins {win:.0%} of "
            f"{judged.get('judged')} comparisons (ties count half)."
        )
    console.print(
        f"[dim]{summary['examples_scored']} of {settings['test_examples']} test examples scored for loss; "
        f"{summary['samples_generated']} answers per model (greedy, ≤{settings['max_new_tokens']} tokens); "
        f"{data['seconds'].get('total', 0):.0f} s.[/]"
    )
    if data["examples"]:
        _show_example(data["examples"][0])
    console.print(
        f"Report: [bold]{_relative(Path(data['files']['html']), root)}[/]  "
        f"(data: {_relative(Path(data['files']['json']), root)})"
    )


def _show_example(example: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    console.print(f"[bold]Held-out question:[/] {escape(example['question'][:300])}", soft_wrap=True)
    table = Table(show_lines=False, expand=True)
    for title, style in (("reference", "dim"), ("base model", ""), ("fine-tuned", "green")):
        table.add_column(title, ratio=1, overflow="fold", header_style=f"bold {style}".strip())
    table.add_row(*(escape(example[key][:600]) or "(empty)" for key in ("reference", "base", "tuned")))
    console.print(table)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
