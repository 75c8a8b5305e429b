"""`forge eval`: the base model against the fine-tuned one on held-out data, as a table and a report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from forgellm.cli.app import app
from forgellm.cli.output import StageBar, console, err_console, print_json


@app.command("eval")
def eval_command(
    run: str | None = typer.Option(None, "--run", help="The run to evaluate (id or folder; default: the newest)."),
    samples: int = typer.Option(
        64, "--samples", min=0, help="Test conversations both models answer (the stop rate is counted on them)."
    ),
    max_new_tokens: int | None = typer.Option(
        None, "--max-new-tokens", min=1, help="Longest answer, in tokens (default: sized by the reference answers)."
    ),
    max_examples: int = typer.Option(200, "--max-examples", min=1, help="Test examples scored for loss."),
    judge: bool | None = typer.Option(
        None, "--judge/--no-judge", help="LLM judge through the advisor (default: when it is gemini or openai)."
    ),
    project: Path = typer.Option(Path("."), "--project", "-C", help="The project folder (holds forge.yaml)."),
    as_json: bool = typer.Option(False, "--json", help="Print reports/eval.json's content (no live display)."),
) -> None:
    """Base vs fine-tuned on the test split: loss, perplexity, answers side by side, ROUGE-L, chrF, stop rate."""
    from forgellm.evaluation import evaluate_run
    from forgellm.project import load_project

    layout, config = load_project(project)
    options = {"samples": samples, "max_new_tokens": max_new_tokens, "max_examples": max_examples, "judge": judge}
    if as_json:
        print_json(evaluate_run(layout, config, run, **options).to_dict())
        return
    with _EvalDisplay() as display:
        result = evaluate_run(layout, config, run, progress=display.progress(), **options)
    _render(result.to_dict(), layout.root)


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


def _figures(summary: dict[str, Any]) -> Any:
    """The table of base vs fine-tuned figures; the stop rate with its count and 95% interval."""
    from rich.table import Table

    from forgellm.evaluation.verdict import stop_interval_text

    table = Table()
    for column, justify in (("metric", "left"), ("base", "right"), ("fine-tuned", "right"), ("change", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    base, tuned = summary["base"], summary["tuned"]
    relative = (summary.get("loss_change") or {}).get("relative")
    for key, label, spec, lower in _ROWS:
        cells = [_num(base[key], spec), _num(tuned[key], spec), _delta(base[key], tuned[key], spec, lower)]
        if key == "stop_rate" and base.get("answers"):  # 75% of 4 answers is not 75% of 64
            cells[:2] = [
                f"{side[key]:.0%} ({side['stopped']}/{side['answers']})\n[dim]{stop_interval_text(side)}[/]"
                for side in (base, tuned)
            ]
        if key == "loss" and isinstance(relative, (int, float)):
            cells[2] += f" ({relative:+.1%})"
        table.add_row(label, *cells)
    return table


def _render(data: dict[str, Any], root: Path) -> None:
    from rich.markup import escape

    from forgellm.evaluation.verdict import loss_change_text

    summary, settings = data["summary"], data["settings"]
    for warning in data["warnings"]:
        err_console.print(f"[yellow]Warning:[/] {escape(warning)}", soft_wrap=True)
    for note in data["notes"]:
        err_console.print(f"[dim]{escape(note)}[/]", soft_wrap=True)
    console.print(
        f"[bold]Run {data['run_id']}[/] ({data['checkpoint']}) against its base model {escape(data['base_model'])}"
    )
    console.print(_figures(summary))
    if loss_change_text(summary.get("loss_change")):
        console.print(f"[dim]{loss_change_text(summary.get('loss_change'))}[/]", soft_wrap=True)
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
    if settings.get("max_new_tokens_reason"):
        console.print(f"[dim]{escape(settings['max_new_tokens_reason'])}.[/]", soft_wrap=True)
    if data["examples"]:
        _show_example(data["examples"][0])
    _show_verdict(summary.get("verdict"))
    console.print(
        f"Report: [bold]{_relative(Path(data['files']['html']), root)}[/]  "
        f"(data: {_relative(Path(data['files']['json']), root)})"
    )


_VERDICT_STYLE = {"better": "bold green", "no_better": "bold yellow", "worse": "bold red"}


def _show_verdict(verdict: dict[str, Any] | None) -> None:
    """The verdict in its colour, and what to change when the model is not better."""
    from rich.markup import escape

    if not verdict:
        return
    style = _VERDICT_STYLE.get(verdict.get("status", ""), "bold")
    console.print(f"[{style}]{escape(verdict['message'])}[/]", soft_wrap=True)
    for suggestion in verdict.get("suggestions", []):
        console.print(f"  • {escape(suggestion)}", soft_wrap=True)


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
