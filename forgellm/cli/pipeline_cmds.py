"""`forge pipeline cpt-ift DOCS CONVERSATIONS "GOAL"`: continued pre-training then instruction tuning."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from forgellm.cli.app import app
from forgellm.cli.output import console, err_console, print_json

pipeline_app = typer.Typer(
    help="Multi-stage training: `cpt-ift` (documents, then conversations).", no_args_is_help=True
)
app.add_typer(pipeline_app, name="pipeline")

_TITLES = {
    "plan": "1/7 Plan (goal, model, the cpt and ift stages)",
    "cpt-prepare": "2/7 CPT: prepare the documents",
    "cpt-train": "3/7 CPT: continued pre-training",
    "cpt-merge": "4/7 CPT: held-out perplexity, merge into the IFT base",
    "ift-prepare": "5/7 IFT: prepare the conversations",
    "ift-train": "6/7 IFT: instruction tuning on the CPT model",
    "eval": "7/7 Evaluate (domain test loss, forgetting on general data)",
}


@pipeline_app.command("cpt-ift")
def cpt_ift(
    docs: Path = typer.Argument(..., help="Folder of domain documents (.md, .txt, .rst) for continued pre-training."),
    conversations: Path = typer.Argument(
        ..., help="Conversations for instruction tuning (any format prepare reads, transcripts included)."
    ),  # fmt: skip
    goal: str = typer.Argument(..., help="What the model should do, in plain words."),
    general: Path | None = typer.Option(
        None, "--general", help="General instructions mixed into IFT (25%) and used to measure forgetting."
    ),  # fmt: skip
    model: str | None = typer.Option(None, "--model", help="Use this model instead of the advisor's choice."),
    epochs: float | None = typer.Option(None, "--epochs", min=0.01, help="Passes over the data (each stage)."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Optimizer steps of each stage."),
    time_budget: float | None = typer.Option(None, "--time-budget", min=0.1, help="Minutes of training per stage."),
    advisor: str | None = typer.Option(None, "--advisor", help="rules (offline), gemini or openai, for this run."),
    project: Path = typer.Option(Path("."), "--project", "-C", help="The project folder (created if needed)."),
    as_json: bool = typer.Option(False, "--json", help="Print the steps' results as JSON at the end."),
) -> None:
    """CPT on DOCS, then IFT on CONVERSATIONS over the CPT model, then eval with forgetting. Re-run to resume."""
    from forgellm.pipelines.cpt_ift import PipelineOptions

    options = PipelineOptions(docs, conversations, goal, general, model, max_steps, epochs, time_budget, advisor)
    run_pipeline(project, options, as_json)


def run_pipeline(project: Path, options: Any, as_json: bool) -> None:
    """Shared by `forge pipeline cpt-ift` and `forge ignite DOCS --conversations FILE`."""
    from forgellm.pipelines.cpt_ift import PipelineInterrupted, run_cpt_ift
    from forgellm.project import find_project

    root = find_project(project) or project
    display = _Display(quiet=as_json)
    try:
        result = run_cpt_ift(root, options, display.hooks())
    except PipelineInterrupted as stop:
        display.close()
        err_console.print(f"[yellow]Interrupted during {stop.step}.[/] Run the same command again: {stop.how}.")
        raise typer.Exit(130) from None
    finally:
        display.close()
    if as_json:
        print_json(result.to_dict())
        return
    runs = result.state.get("runs", {})
    console.print(f"Done. CPT run {runs.get('cpt')}, IFT run {runs.get('ift')}. "
                  "`forge status` shows both stages; `forge export` exports the IFT model.")  # fmt: skip


class _Display:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.train_display: Any = None
        self.started_at = time.perf_counter()

    def hooks(self) -> Any:
        from forgellm.pipelines.cpt_ift import PipelineHooks

        return PipelineHooks(self.started, self.finished, self.progress, self.train_event)

    def started(self, step: str) -> None:
        self.started_at = time.perf_counter()
        if self.quiet:
            return
        console.rule(f"[bold]{_TITLES[step]}[/]", align="left")
        if step.endswith("-train"):
            from forgellm.cli.train_cmds import _LiveDisplay

            self.train_display = _LiveDisplay().__enter__()

    def finished(self, step: str, status: str, decision: str) -> None:
        self.close()
        if self.quiet:
            return
        if status == "reused":
            console.print(f"[dim]{_TITLES[step]}: done earlier — {decision}[/]")
        else:
            console.print(f"  {decision} ({time.perf_counter() - self.started_at:.0f} s)")

    def progress(self, message: str) -> None:
        if not self.quiet and self.train_display is None:
            console.print(f"  [dim]{message}[/]")

    def train_event(self, event: dict[str, Any]) -> None:
        if self.train_display is not None:
            self.train_display.update(event)

    def close(self) -> None:
        if self.train_display is not None:
            self.train_display.__exit__(None, None, None)
            self.train_display = None
