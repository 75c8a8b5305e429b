"""`forge ignite DATA "GOAL"`: every stage in one command, a panel per stage, a summary at the end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from forgellm.cli.app import app
from forgellm.cli.output import console, count_rate, err_console, print_json, rate_progress
from forgellm.cli.runtime_opt import runtime_option
from forgellm.cli.scale_opt import (
    ScaleFlags,
    distributed_option,
    gpus_option,
    main_address_option,
    main_port_option,
    node_rank_option,
    nodes_option,
)

_TITLES = {
    "init": "1/7 Project",
    "study": "2/7 Study the data",
    "plan": "3/7 Plan",
    "prepare": "4/7 Prepare",
    "train": "5/7 Train",
    "eval": "6/7 Evaluate",
    "export": "7/7 Export",
}


@app.command()
def ignite(
    data: Path = typer.Argument(..., help="Your data: CSV, TSV, JSON(L), Parquet (optionally .gz), text or folder."),
    goal: str = typer.Argument(..., help='What the model should do, in plain words, e.g. "Make a support bot".'),
    model: str | None = typer.Option(None, "--model", help="Use this model instead of the advisor's choice."),
    epochs: float | None = typer.Option(None, "--epochs", min=0.01, help="Passes over the data."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Examples per forward pass."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Stop training after N optimizer steps."),
    time_budget: float | None = typer.Option(
        None, "--time-budget", min=0.1, help="Minutes of training you accept; the steps are sized to fill them."
    ),
    advisor: str | None = typer.Option(None, "--advisor", help="rules (offline), gemini or openai, for this run."),
    no_export: bool = typer.Option(False, "--no-export", help="Stop after evaluation; no GGUF or Modelfile."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan and stop; write nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before training or before replacing a plan."),
    project: Path = typer.Option(Path("."), "--project", "-C", help="The project folder (created if needed)."),
    as_json: bool = typer.Option(False, "--json", help="Print the stages' results as JSON at the end."),
    runtime: str | None = runtime_option(),  # type: ignore[assignment]
    conversations: Path | None = typer.Option(
        None, "--conversations", help="With a folder of documents as DATA: continued pre-training on the documents, "
        "then instruction tuning on these conversations (`forge pipeline cpt-ift`)."
    ),
    general: Path | None = typer.Option(None, "--general", help="With --conversations: general data mixed into IFT."),
    expand: int | None = typer.Option(
        None, "--expand", min=2, help="First grow the data to N rows with the LLM advisor (see `forge expand`)."
    ),
    distributed: str | None = distributed_option(),
    gpus: int | None = gpus_option(),
    nodes: int | None = nodes_option(),
    node_rank: int = node_rank_option(),
    main_address: str | None = main_address_option(),
    main_port: int | None = main_port_option(),
) -> None:
    """Everything in one command: study, plan, prepare, train, evaluate and export. Re-run to resume."""
    if conversations is not None:  # documents + conversations: the two-stage pipeline
        from forgellm.cli.pipeline_cmds import run_pipeline
        from forgellm.pipelines.cpt_ift import PipelineOptions

        options = PipelineOptions(data, conversations, goal, general, model, max_steps, epochs, time_budget, advisor)
        run_pipeline(project, options, as_json)
        return
    from forgellm.errors import ErrorCode, ForgeError
    from forgellm.pipeline import IgniteInterrupted, IgniteOptions
    from forgellm.pipeline import ignite as run_ignite
    from forgellm.project import find_project

    if advisor is not None and advisor not in ("rules", "gemini", "openai"):
        raise ForgeError(
            f"Unknown advisor {advisor!r}.",
            fix="Use --advisor rules, gemini or openai.",
            code=ErrorCode.ADVISOR_UNKNOWN,
        )
    scale = ScaleFlags(distributed, gpus, nodes, node_rank, main_address, main_port)
    scale.overrides()  # a wrong --distributed is refused before any stage runs
    root = find_project(project) or project
    if data.is_dir() and not as_json:
        _offer_pipeline(data, goal)
    data = _expanded(data, goal, expand, advisor, root, quiet=as_json)
    options = IgniteOptions(
        data,
        goal,
        model,
        epochs,
        batch_size,
        max_steps,
        advisor,
        not no_export,
        dry_run,
        yes,
        time_budget=time_budget,
        runtime=runtime,
        parallel=scale.overrides(),
        launch=scale.launch(),
    )
    display = _IgniteDisplay(quiet=as_json)
    try:
        result = run_ignite(root, options, display.hooks())
    except IgniteInterrupted as stop:
        display.close()
        err_console.print(f"[yellow]Interrupted during {stop.stage}.[/] Run the same command again: {stop.how}.")
        raise typer.Exit(130) from None
    finally:
        display.close()
    if as_json:
        print_json(result.to_dict())
        return
    if result.stopped_after == "plan":
        how = "forge ignite again without --dry-run" if dry_run else "the same command with --yes"
        console.print(f"Stopped after the plan. To go on: {how}.")
        return
    _final_summary(result)


def _offer_pipeline(folder: Path, goal: str) -> None:
    """A folder of documents trains by continued pre-training alone; say how to add conversations after it."""
    from rich.markup import escape

    from forgellm.errors import ForgeError
    from forgellm.pipelines.docs import inventory

    try:
        documents = inventory(folder).documents
    except ForgeError:  # not documents: ignite's own reading says what it is
        return
    if documents:
        err_console.print(
            f"[dim]{escape(str(folder))} is a folder of {len(documents)} documents: ignite trains on them by "
            "continued pre-training. To teach the model conversations on top of that (CPT -> IFT), run "
            f'[bold]forge ignite {escape(str(folder))} --conversations FILE "{escape(goal)}"[/] '
            "(or `forge pipeline cpt-ift`).[/]",
            soft_wrap=True,
        )


def _expanded(data: Path, goal: str, target: int | None, advisor: str | None, root: Path, quiet: bool) -> Path:
    """The data ignite trains on: ``data``, or its synthetic expansion with --expand (suggested when small)."""
    from forgellm.synthetic.run import expanded_for_ignite, small_data_hint

    if target is None:
        hint = None if quiet else small_data_hint(data, f'forge ignite {data} "{goal}" --expand 500')
        if hint:
            console.print(f"[yellow]Hint:[/] {hint}", soft_wrap=True)
        return data
    from forgellm.project import find_project, load_project

    config = load_project(root)[1] if find_project(root) else None
    output, report = expanded_for_ignite(data, target, config=config, provider=advisor, goal=goal)
    if not quiet:
        done = f"kept {report.kept:,} of {report.generated:,} written" if report else "made earlier, reused"
        console.print(f"Expanded data: [bold]{output}[/] ({done}).")
    return output


class _IgniteDisplay:
    """Progress inside a stage (rows, training's live view, export's bar) and a panel when it ends."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.rows_progress: Any = None
        self.step_started = time.perf_counter()
        self.train_display: Any = None
        self.export_display: Any = None

    def hooks(self) -> Any:
        from forgellm.pipeline import IgniteHooks

        hooks = IgniteHooks(
            stage_started=self.started,
            stage_finished=self.finished,
            confirm=self.confirm,
            step=self.step,
            rows=self.rows,
            train_event=self.train_event,
        )
        if not self.quiet:
            from forgellm.cli.export_cmds import _ExportDisplay

            self.export_display = _ExportDisplay()
            hooks.export_progress = self.export_display.progress()
        return hooks

    def started(self, stage: str) -> None:
        if self.quiet:
            return
        console.rule(f"[bold]{_TITLES[stage]}[/]", align="left")
        if stage == "train":
            from forgellm.cli.train_cmds import _LiveDisplay

            self.train_display = _LiveDisplay().__enter__()
        elif stage == "export" and self.export_display is not None:
            self.export_display.__enter__()

    def finished(self, outcome: Any) -> None:
        self._stop_progress()
        if self.train_display is not None:
            self.train_display.__exit__(None, None, None)
            self.train_display = None
        if outcome.stage == "export" and self.export_display is not None:
            self.export_display.__exit__(None, None, None)
        if self.quiet:
            return
        if outcome.stage == "plan" and outcome.result is not None:
            from forgellm.cli.plan_cmds import _render as render_plan

            render_plan(outcome.result, next_step=False)  # the full plan with its reasons, as `forge plan` shows
        from rich.panel import Panel

        console.print(
            Panel(
                outcome.decision,
                title=f"[bold]{_TITLES[outcome.stage]}[/]",
                title_align="left",
                subtitle=f"{outcome.seconds:.1f} s",
                subtitle_align="right",
                border_style="green",
            )
        )

    def confirm(self, question: str) -> bool:
        self._stop_progress()
        if not console.is_terminal:
            raise _no_terminal(question)
        return typer.confirm(question, default=True)

    def step(self, message: str) -> None:
        self.step_started = time.perf_counter()
        if not self.quiet:
            err_console.print(f"  [dim]{message}[/]", soft_wrap=True)

    def rows(self, done: int, total: int | None) -> None:
        if self.quiet:
            return
        if self.rows_progress is None:
            self.rows_progress = rate_progress(err_console, unit="rows")
            self.rows_progress.start()
            self.task = self.rows_progress.add_task("Rows", total=total)
            # Counted from the step that started the rows: the first report comes after a whole chunk.
            self.rows_since = self.step_started
        rate = count_rate(done, self.rows_since)
        self.rows_progress.update(self.task, completed=done, total=total, rate=rate)

    def train_event(self, event: dict[str, Any]) -> None:
        if self.train_display is not None:
            self.train_display.update(event)

    def _stop_progress(self) -> None:
        if self.rows_progress is not None:
            self.rows_progress.stop()
            self.rows_progress = None

    def close(self) -> None:
        self._stop_progress()
        if self.train_display is not None:
            self.train_display.__exit__(None, None, None)
            self.train_display = None


def _no_terminal(question: str) -> Exception:
    from forgellm.errors import ErrorCode, ForgeError

    return ForgeError(
        f"ignite would ask: {question} — but there is no terminal to answer in.",
        fix="Add --yes to go on without asking (or --dry-run to only see the plan).",
        code=ErrorCode.CONFIRMATION_NEEDED,
    )


def _final_summary(result: Any) -> None:
    from rich.table import Table

    root = result.project_dir
    table = Table(title="Done", show_header=False, box=None, padding=(0, 2), title_justify="left")
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for outcome in result.outcomes:
        timing = "earlier run" if outcome.status == "reused" else f"{outcome.seconds:.0f} s"
        table.add_row(f"[bold]{outcome.stage}[/] [dim]({timing})[/]", outcome.decision)
    console.print(table)
    evaluated = result.outcome("eval")
    _eval_verdict(evaluated)
    example = _one_example(root, evaluated)
    if example is not None:
        from rich.columns import Columns
        from rich.panel import Panel

        console.print(f"[bold]A held-out question:[/] {example['prompt']}")
        console.print(
            Columns(
                [
                    Panel(example["base"] or "(empty)", title="base model", width=60),
                    Panel(example["tuned"] or "(empty)", title="fine-tuned", width=60, border_style="green"),
                ]
            )
        )
    exported = result.outcome("export")
    console.print('Chat with it: [bold]forge inference[/]   (one question: forge inference --prompt "...")')
    if exported is not None and exported.details.get("folder"):
        folder = Path(exported.details["folder"])
        name = folder.name
        console.print(f"Files: {folder}")
        console.print(
            f"Ollama: [bold]cd {root} && ollama create {name} -f exports/{name}/Modelfile && ollama run {name}[/]",
            soft_wrap=True,
        )
    console.print("Where things stand: [bold]forge status[/]")


def _eval_verdict(evaluated: Any) -> None:
    """The evaluation's verdict in words, with what to change, when the model is not better than its base:
    a falling loss in the table above must not read as success when it is within noise."""
    from rich.markup import escape

    summary = evaluated.details.get("summary") if evaluated is not None else None
    verdict = (summary or {}).get("verdict")
    if not verdict or verdict.get("status") == "better":
        return
    colour = "red" if verdict.get("status") == "worse" else "yellow"
    console.print(f"[bold {colour}]{escape(verdict['message'])}[/]", soft_wrap=True)
    for suggestion in verdict.get("suggestions", []):
        console.print(f"  • {escape(suggestion)}", soft_wrap=True)


def _one_example(root: Path, evaluated: Any) -> dict[str, Any] | None:
    """The first evaluated sample (from reports/eval.json, so a resumed ignite shows it too)."""
    from forgellm.project.eval_record import EvalRecord
    from forgellm.project.layout import ProjectLayout

    report = EvalRecord.load(ProjectLayout(root))
    examples = report.examples if report is not None else []
    if not examples or evaluated is None:
        return None
    first = examples[0]
    prompt = first.get("prompt")
    if isinstance(prompt, list):  # messages: show the last user turn
        prompt = next((m.get("content") for m in reversed(prompt) if m.get("role") == "user"), "")
    return {
        "prompt": str(prompt)[:300],
        "base": str(first.get("base", ""))[:600],
        "tuned": str(first.get("tuned", ""))[:600],
    }
