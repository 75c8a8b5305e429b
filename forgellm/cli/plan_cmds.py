"""`forge plan`: choose the model and settings for a goal, data and this machine -> forge.yaml."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from forgellm.cli.app import app
from forgellm.cli.output import console, print_json, progress_steps
from forgellm.units import human_bytes


class MethodChoice(StrEnum):
    lora = "lora"
    qlora = "qlora"
    full = "full"


class AdvisorChoice(StrEnum):
    rules = "rules"
    gemini = "gemini"
    openai = "openai"


@app.command()
def plan(
    goal: str | None = typer.Argument(None, help="What the model should do, in plain words (any language)."),
    data: Path | None = typer.Option(
        None, "--data", "-d", help="Your training data (any format `forge prepare` reads)."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Use this model (alias, hub id or folder) instead of choosing."
    ),
    method: MethodChoice | None = typer.Option(None, "--method", help="Fine-tuning method."),
    epochs: float | None = typer.Option(None, "--epochs", min=0.01, help="Passes over the data."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Micro-batch: examples per forward pass."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Stop after this many optimizer steps."),
    time_budget: float | None = typer.Option(
        None, "--time-budget", min=0.1, help="Minutes of training you accept; the steps are sized to fill them."
    ),
    advisor: AdvisorChoice | None = typer.Option(None, "--advisor", help="Who proposes, for this run only."),
    project: Path = typer.Option(
        Path("."), "--project", "-C", help="Project folder (created if it has no forge.yaml)."
    ),
    apply_replay: bool = typer.Option(
        False, "--apply-replay", help="Mix in the share of general data `forge eval` recommended after it measured "
        "forgetting (data.sources); nothing else is planned again.",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; write nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Plan the fine-tuning: model, method and hyper-parameters for your goal, data and hardware -> forge.yaml.

    Without a forge.yaml here (or above), the project is created in --project, as `forge init` would.
    """
    from forgellm.planning import PlanOverrides, make_plan
    from forgellm.project import ProjectLayout, find_project, written_config

    if apply_replay:
        _apply_replay(project, dry_run)
        return
    layout = ProjectLayout((find_project(project) or project).expanduser().resolve())
    flags = PlanOverrides(model, method.value if method else None, epochs, batch_size, max_steps, time_budget)
    with progress_steps(enabled=not as_json) as step:
        result = make_plan(
            layout, written_config(layout), goal, data=data, overrides=flags,
            provider=advisor.value if advisor else None, dry_run=dry_run, progress=step,
        )  # fmt: skip
    if as_json:
        print_json(result.to_dict())
        return
    _render(result)


def _apply_replay(project: Path, dry_run: bool) -> None:
    from rich.markup import escape

    from forgellm.config.io import save_config
    from forgellm.planning.replay import apply_replay
    from forgellm.project import ProjectLayout, require_project, written_config

    layout = ProjectLayout(require_project(project))
    change = apply_replay(layout, written_config(layout))
    console.print(f"Replay share {change.share:.0%} in {change.where}:")
    for source in change.sources:
        where = escape(str(source["path"]))
        console.print(f"  {source['name']} ({source['role']}): ratio {source['ratio']:g}  {where}", soft_wrap=True)
    if change.copied is not None:
        copied = escape(str(change.copied.relative_to(layout.root)))
        console.print(f"General data: the set shipped with Forge, copied to {copied}", soft_wrap=True)
    if dry_run:
        console.print("[dim]Dry run: nothing was written.[/]")
        return
    save_config(change.config, layout.config_file)
    console.print(f"Wrote [bold]{layout.config_file}[/]: {escape(change.why)}", soft_wrap=True)
    console.print("Next: [bold]forge prepare[/] (the mixture), then [bold]forge train[/] and [bold]forge eval[/].")


def _render(result: Any, *, next_step: bool = True) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title=f"Plan ({result.advisor} advisor)", box=box.SIMPLE_HEAD, show_header=False, pad_edge=False)
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("", overflow="fold")
    for label, value in _rows(result):
        table.add_row(label, value)
    console.print(table)
    for line in [*(f"[yellow]corrected[/] {c.sentence()}" for c in result.corrections),
                 *(f"[yellow]warning[/] {w}" for w in result.warnings),
                 *(f"[dim]advisor: {n}[/]" for n in result.advisor_notes)]:  # fmt: skip
        console.print(line, soft_wrap=True)
    if result.config_path:
        console.print(f"Wrote [bold]{result.config_path}[/] (each section says why in `rationale`).")
    else:
        console.print("[dim]Dry run: nothing was written.[/]")
    if next_step:  # `forge ignite` goes on by itself: no "Next:" there
        console.print(f"Next: [bold]{result.next_step}[/]")


def _length(training: Any) -> str:
    parts = [f"{training.epochs:g} epochs" if training.epochs else "", ""]
    if training.max_steps:
        parts[1] = f"at most {training.max_steps} steps"
    return ", ".join(p for p in parts if p)


def _rows(result: Any) -> list[tuple[str, str]]:
    from forgellm.planning.estimate import human_duration

    config, training, memory = result.config, result.config.training, result.memory
    rows = [
        ("Model", f"{result.model_key} ({result.model_params / 1e6:,.0f}M params)"),
        ("Why", result.why_model),
        ("Method", f"{training.method}" + (f", LoRA rank {training.lora.r}" if training.method != "full" else "")),
        ("Learning rate", f"{training.learning_rate:g} ({training.lr_scheduler}, warm-up {training.warmup_ratio:.0%})"),
        (
            "Batch",
            f"{training.micro_batch_size} x {training.gradient_accumulation} accumulation "
            f"= {training.micro_batch_size * training.gradient_accumulation} per step",
        ),  # fmt: skip
        ("Max length", f"{config.model.max_length} tokens"),
        ("Length", _length(training)),
        (
            "Memory",
            f"~{human_bytes(memory.total_bytes)} of {human_bytes(result.memory_budget_bytes)} "
            f"({result.memory_budget_source})",
        ),  # fmt: skip
    ]
    if result.precision is not None:
        rows.append(("Precision", result.precision.reason))
    if result.time is not None:
        time = result.time
        rows.append(("Time", f"~{human_duration(time.seconds_per_epoch)} per epoch; this run ~"
                             f"{human_duration(time.seconds_total)} ({time.total_steps} steps)"))  # fmt: skip
    if result.time_budget_minutes:
        rows.append(("Time budget", f"{result.time_budget_minutes:g} min"))
    if result.profile is not None:
        profile = result.profile
        tokens = f"tokens p50 {profile.tokens['p50']:.0f} / p99 {profile.tokens['p99']:.0f}"
        rows.append(("Data", f"{profile.format}, ~{profile.rows:,} rows, {tokens} ({profile.token_counter})"))
    rows += [("You set", o.sentence().removeprefix("you set ")) for o in result.overrides]
    return rows
