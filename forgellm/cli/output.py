"""Rendering helpers shared by the commands: JSON for machines, rich for people."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:
    from rich.progress import Progress

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    """Stable, plain JSON on stdout (no colour, no wrapping) for `--json`."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


@contextmanager
def progress_steps(enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A callback for long library steps: a spinner with elapsed time on stderr, one line per finished step.

    The console is bound to the stderr of *now*, so library code may silence stderr while it works.
    """
    if not enabled:
        yield lambda _message: None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    steps_console = Console(file=sys.stderr, highlight=False)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=steps_console, transient=True) as progress:
        task = progress.add_task("Working", total=None)
        previous: list[str] = []

        def show(message: str) -> None:
            if previous:
                progress.console.print(f"  [green]✓[/] [dim]{previous[-1]}[/]")
            previous.append(message)
            progress.update(task, description=message)

        yield show
        if previous:
            progress.console.print(f"  [green]✓[/] [dim]{previous[-1]}[/]")


def rate_progress(
    console: Console, *, unit: str = "rows", bar_width: int | None = 40, transient: bool = True
) -> Progress:
    """A bar for counted work: spinner, description, bar, done/total, speed, time taken and ETA.

    The speed shows a task's `rate` field (see count_rate) in `unit` per second, or in the task's own
    `unit` field where one bar counts different things in turn (examples, answers, verdicts).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        ProgressColumn,
        SpinnerColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            rate = task.fields.get("rate")
            if rate is None:
                return Text("")
            shown = f"{rate:.1f}" if rate < 10 else f"{rate:,.0f}"
            return Text(f"{shown} {task.fields.get('unit') or unit}/s", style="cyan")

    return RichProgress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(bar_width=bar_width),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


def count_rate(done: int, started: float) -> float | None:
    """Units per second since `started` (a time.perf_counter()), for rate_progress's `rate` field. Over the
    whole count, not rich's recent window: the answers of one batch finish in the same instant."""
    elapsed = time.perf_counter() - started
    return done / elapsed if done and elapsed > 0 else None


class StageBar:
    """A line per finished stage (✓) and, while a stage runs, a rate_progress bar for what it counts.

    `stage(message)` ends the previous stage and starts the next; `advance(done, total, unit)` moves its
    bar, with the speed over the whole stage. Leaving the `with` block normally marks the last stage
    done; after an error it is left unmarked.
    """

    def __init__(self, console: Console, *, unit: str, bar_width: int | None = 40) -> None:
        self.bar = rate_progress(console, unit=unit, bar_width=bar_width)
        self.task: Any = None
        self.current: str | None = None
        self.started = time.perf_counter()

    def __enter__(self) -> StageBar:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            self._finish_stage()
        self.bar.__exit__(*exc_info)

    def stage(self, message: str) -> None:
        self._finish_stage()
        self.current = message
        self.task = self.bar.add_task(message, total=None)
        self.started = time.perf_counter()

    def advance(self, done: int, total: int, unit: str | None = None) -> None:
        if self.task is None:
            return
        fields = {"unit": unit} if unit else {}
        self.bar.update(self.task, total=total, completed=done, rate=count_rate(done, self.started), **fields)

    def _finish_stage(self) -> None:
        if self.current is not None:
            self.bar.console.print(f"  [green]✓[/] [dim]{self.current}[/]", soft_wrap=True)
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None


@contextmanager
def signals_for_main_thread() -> Iterator[None]:
    """Threads started inside this block (a rich Live's refresh thread) never receive Ctrl-C or SIGTERM.

    The kernel hands a process signal to any thread that does not block it. Python runs its handler in the
    main thread only when that thread next runs Python code, so a Ctrl-C taken by a display thread leaves a
    main thread blocked in a socket read (a Docker build streaming a long silent step) waiting until the next
    byte arrives: a build "ignoring" Ctrl-C for minutes. New threads inherit the mask of their creator; the
    main thread's own mask is restored at the end of the block."""
    import signal

    if not hasattr(signal, "pthread_sigmask"):  # Windows: no per-thread masks
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
