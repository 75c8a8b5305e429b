"""`forge train`: supervised, self-healing training with a live display."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from forgellm.cli.app import app
from forgellm.cli.output import console, err_console, print_json
from forgellm.cli.runtime_opt import choose, runtime_option
from forgellm.cli.scale_opt import (
    ScaleFlags,
    distributed_option,
    gpus_option,
    main_address_option,
    main_port_option,
    node_rank_option,
    nodes_option,
)
from forgellm.units import human_bytes

if TYPE_CHECKING:
    from forgellm.project.run_record import RunSummary

if TYPE_CHECKING:
    pass


@app.command()
def train(
    run: str | None = typer.Argument(None, help="With --resume: the run to resume (default: the newest unfinished)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an unfinished run from its last checkpoint."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Stop after N optimizer steps."),
    project: Path = typer.Option(Path("."), "--project", "-C", help="The project folder (holds forge.yaml)."),
    as_json: bool = typer.Option(False, "--json", help="Print the run's summary as JSON (no live display)."),
    runtime: str | None = runtime_option(),  # type: ignore[assignment]
    distributed: str | None = distributed_option(),
    gpus: int | None = gpus_option(),
    nodes: int | None = nodes_option(),
    node_rank: int = node_rank_option(),
    main_address: str | None = main_address_option(),
    main_port: int | None = main_port_option(),
) -> None:
    """Train on the prepared data; recovers from out-of-memory, NaN loss and crashes on its own.
    On several GPUs (`--gpus N`) or machines (`--nodes`), one process per GPU through accelerate."""
    from forgellm.errors import ErrorCode, ForgeError
    from forgellm.project import load_project
    from forgellm.training.supervisor import run_training

    if run is not None and not resume:
        raise ForgeError(
            f"'{run}' names a run, which only --resume takes.",
            fix=f"forge train --resume {run}",
            code=ErrorCode.USAGE_INVALID,
        )
    layout, config = load_project(project)
    which: str | bool | None = (run or True) if resume else None
    choice = choose(runtime, config.runtime, "Training", gpu_work=True, quiet=as_json)
    scale = ScaleFlags(distributed, gpus, nodes, node_rank, main_address, main_port)
    where = {
        "runner": choice.runner(), "runtime": choice.record(), "parallel": scale.overrides(), "launch": scale.launch(),
    }  # fmt: skip
    if as_json:
        result = run_training(layout, config, resume=which, max_steps=max_steps, **where)
        print_json(result.to_dict())
    else:
        with _LiveDisplay() as display:
            result = run_training(layout, config, resume=which, max_steps=max_steps, on_event=display.update, **where)
        _render_summary(result.summary)
    if result.status == "interrupted":
        if not as_json:
            err_console.print(
                f"[yellow]Interrupted.[/] Continue with: [bold]forge train --resume {result.run_id}[/]", soft_wrap=True
            )
        raise typer.Exit(130)


class _LiveDisplay:
    """Step, loss, validation loss, learning rate, speed, memory, ETA and recoveries, redrawn per event;
    evaluations, checkpoints, warnings and recoveries also stay as lines above it."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {"recoveries": 0}
        self.live: Any = None

    def __enter__(self) -> _LiveDisplay:
        from rich.live import Live

        if err_console.is_terminal:  # in a log file or CI, a redrawn panel is noise: plain lines instead
            self.live = Live(self._render(), console=err_console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc_info)

    def update(self, event: dict[str, Any]) -> None:
        kind, state = event.get("event"), self.state
        if kind in ("run", "attempt", "start", "step"):
            state.update({k: v for k, v in event.items() if v is not None and k != "event"})
        line = _event_line(event)
        if kind == "eval":
            state.update(val_loss=event.get("val_loss"), best_val_loss=event.get("best_val_loss"))
        elif kind == "recovery":
            state["recoveries"] += 1
        elif kind == "step" and self.live is None and self._report_step(event["step"]):
            line = (
                f"  step {event['step']}/{state.get('total_steps')}  loss {_num(event.get('loss'))}  ETA {_eta(state)}"
            )
        if line:
            err_console.print(line, soft_wrap=True)
        if self.live is not None:
            self.live.update(self._render())

    def _report_step(self, step: int) -> bool:
        total = self.state.get("total_steps") or 1
        return step == total or step % max(1, total // 10) == 0

    def _render(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        s = self.state
        grid = Table.grid(padding=(0, 2))
        if "run_id" not in s:
            grid.add_row("[dim]Preparing the run …[/]")
            return grid
        setup = ", ".join(str(s[k]) for k in ("device", "method", "precision") if s.get(k))
        if (s.get("world_size") or 1) > 1:
            setup += f", {s.get('distributed')} × {s['world_size']}"
        grid.add_row(
            f"[bold]{s['run_id']}[/]  attempt {s.get('attempt', 1)}" + (f"  [dim]({setup})[/]" if setup else "")
        )
        total, step = s.get("total_steps"), s.get("step", 0)
        if total:
            bar = Table.grid(padding=(0, 1))
            bar.add_row(ProgressBar(total=total, completed=step, width=40), f"step {step}/{total}", f"ETA {_eta(s)}")
            grid.add_row(bar)
        figures = [
            f"loss {_num(s.get('loss'))}",
            f"val {_num(s.get('val_loss'))} (best {_num(s.get('best_val_loss'))})",
            f"lr {_num(s.get('lr'), '.1e')}",
            f"{_num(s.get('tokens_per_s'), '.0f')} tok/s",
            f"mem {human_bytes(s.get('memory_bytes'))}",
            f"recoveries {s['recoveries']}",
        ]
        grid.add_row("  ".join(figures))
        return grid


def _num(value: Any, spec: str = ".4g") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "–"


def _eta(state: dict[str, Any]) -> str:
    seconds = state.get("eta_s")
    if not isinstance(seconds, (int, float)):
        return "–"
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{sec:02d}"


def _event_line(event: dict[str, Any]) -> str | None:
    kind = event.get("event")
    if kind == "run":
        verb = "Resuming" if event.get("resumed") else "Started"
        return f"{verb} run [bold]{event['run_id']}[/] in {event['run_dir']}"
    if kind == "attempt":
        return _attempt_line(event)
    if kind == "eval":
        best = " [green](best so far)[/]" if event.get("improved") else ""
        return f"  step {event.get('step')}: validation loss {_num(event.get('val_loss'))}{best}"
    if kind == "checkpoint":
        return f"[dim]  checkpoint {event.get('reason')}: {Path(str(event.get('path'))).name}[/]"
    if kind == "warning":
        return f"[yellow]warning[/] {event.get('message')}"
    if kind == "recovery":
        changes = ", ".join(f"{key.split('.')[-1]} {c['from']} → {c['to']}" for key, c in event["changes"].items())
        what = f" — changed {changes}" if changes else ""
        return (
            f"[bold yellow]Recovering[/] from {event['kind']} at step {event.get('step')}{what}. {event['explanation']}"
        )
    if kind == "error":
        return f"[red]{event.get('kind')}[/] {event.get('message')}"
    return None


def _attempt_line(event: dict[str, Any]) -> str | None:
    parallel = event.get("parallel") or {}
    lines = []
    if (parallel.get("world_size") or 1) > 1:
        strategy, world, why = parallel["strategy"], parallel["world_size"], parallel["reason"]
        lines.append(f"[dim]{strategy} on {world} processes ({parallel['gpus']} per machine): {why}[/]")
    if event.get("resume_from"):
        lines.append(f"[dim]Worker (attempt {event['attempt']}) continues from {Path(event['resume_from']).name}[/]")
    return "\n".join(lines) or None


def _render_summary(summary: RunSummary) -> None:
    from rich.table import Table

    from forgellm.project.layout import RunLayout

    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")  # paths are copied by users: wrap them, never cut them
    best = summary.best_val_loss
    rows = [
        ("Status", f"{summary.status}" + (f" ({summary.reason})" if summary.reason else "")),
        ("Steps", f"{summary.steps}/{summary.total_steps}"),
        ("Best val loss", f"{_num(best)} at step {summary.best_step}" if best is not None else "–"),
        ("Final train loss", _num(summary.final_train_loss)),
        ("Speed", f"{_num(summary.tokens_per_s, '.0f')} tokens/s"),
        ("Peak memory", human_bytes(summary.peak_memory_bytes)),
        ("Duration", f"{summary.duration_s or 0:.0f} s in {summary.attempts} attempt(s)"),
        ("Recoveries", str(len(summary.recoveries))),
    ]
    for key, change in summary.config_changes.items():
        rows.append(("Healing changed", f"{key}: {change['from']} → {change['to']}"))
    paths = summary.paths
    for label, key in (("Best model", "best"), ("Last checkpoint", "last_checkpoint"), ("Loss plot", "loss_plot")):
        if paths.get(key):
            rows.append((label, str(paths[key])))
    rows.append(("Summary", str(RunLayout(Path(str(paths["run_dir"]))).summary)))
    for label, value in rows:
        table.add_row(f"[bold]{label}[/]", value)
    console.print(table)
    if summary.config_changes:
        console.print("[dim]forge.yaml is unchanged; copy these settings there to start later runs with them.[/]")
