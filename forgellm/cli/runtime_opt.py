"""`--runtime auto|local|docker` of prepare, train, export and ignite: the choice, said in one line, and a
stage re-run inside the container (the same `forge` command with `--runtime local`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from forgellm.cli.output import err_console

if TYPE_CHECKING:
    from forgellm.runtime.choice import RuntimeChoice

RUNTIME_HELP = "Where it runs: auto, local or docker (default: `runtime:` in forge.yaml, auto)."


def runtime_option() -> object:
    return typer.Option(None, "--runtime", help=RUNTIME_HELP, metavar="auto|local|docker")


def choose(flag: str | None, configured: str, purpose: str, *, gpu_work: bool, quiet: bool = False) -> RuntimeChoice:
    """The runtime for this command (the flag over forge.yaml), announced on stderr."""
    from forgellm.runtime.choice import choose_runtime

    choice = choose_runtime(flag or configured, purpose=purpose, gpu_work=gpu_work)
    if not quiet or choice.name == "docker":
        err_console.print(f"[dim]{choice.line()}[/]", soft_wrap=True, highlight=False)
    return choice


def run_in_container(
    choice: RuntimeChoice,
    stage: str,
    args: list[str],
    project_dir: Path,
    read_only: list[Path] = (),  # type: ignore[assignment]
) -> NoReturn:
    """`forge STAGE ARGS --runtime local` in a container; this command exits with its exit code (its
    own error message, if any, was already shown by the forge inside)."""
    import os

    from forgellm.runtime.container import container_name

    runner = choice.runner()
    name = container_name(project_dir.name, stage, str(os.getpid()))
    command = ["forge", stage, *args, "--runtime", "local"]
    code = runner.run_command(name, command, project_dir, project_dir=project_dir, read_only=list(read_only))
    raise typer.Exit(128 - code if code < 0 else code)  # killed by signal n: 128 + n, as a shell says
