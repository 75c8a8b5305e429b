"""Rendering helpers shared by the commands: JSON for machines, rich for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    """Stable, plain JSON on stdout (no colour, no wrapping) for `--json`."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def human_bytes(count: float | int | None) -> str:
    if count is None:
        return "?"
    value = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover


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
