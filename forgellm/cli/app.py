"""The `forge` Typer app and its error handling: every sub-command module adds its commands to `app`."""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from forgellm import __version__


def _framework_exceptions() -> tuple[type[BaseException], ...]:
    """What the command-line framework reports itself (usage + exit 2, --help, Ctrl-D), never "a bug in
    Forge". Typer >= 0.2x ships its own copy of click, whose errors derive from typer.TyperException;
    older Typer raises the errors of the separate `click` package, which may or may not be installed."""
    found: list[type[BaseException]] = [typer.Exit, typer.Abort]
    if hasattr(typer, "TyperException"):
        found.append(typer.TyperException)
    try:
        import click
    except ImportError:
        return tuple(found)
    return (*found, click.exceptions.ClickException, click.exceptions.Exit)


_FRAMEWORK_EXCEPTIONS = _framework_exceptions()


class ForgeGroup(TyperGroup):
    """Turns ForgeError into its code, a clear message and exit code 1 — a user never sees a traceback for it."""

    def invoke(self, ctx):  # type: ignore[override]
        from forgellm.errors import ForgeError

        try:
            return super().invoke(ctx)
        except ForgeError as exc:
            from rich.markup import escape

            from forgellm.cli.failure import error_label
            from forgellm.cli.output import err_console

            # Messages quote the user's data (column names, values): printed as text, never as rich markup.
            err_console.print(f"{error_label(exc)} {escape(exc.message)}", soft_wrap=True)
            for detail in exc.details:
                err_console.print(f"  [red]•[/] {escape(detail)}", soft_wrap=True)
            if exc.fix:
                err_console.print(f"[bold]Fix:[/] {escape(exc.fix)}", soft_wrap=True)
            else:  # no fix of its own: maybe a known failure the rules advisor can explain
                _print_diagnosis(ctx, exc)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            from forgellm.cli.output import err_console

            err_console.print("[yellow]Interrupted.[/] Finished work is kept; nothing half-written was published.")
            raise typer.Exit(130) from None
        except _FRAMEWORK_EXCEPTIONS:
            raise
        except Exception as exc:  # a bug in Forge: say so plainly; the traceback only on request
            import os

            if os.environ.get("FORGE_DEBUG"):
                raise
            from forgellm.cli.failure import is_environment_failure
            from forgellm.cli.output import err_console

            if is_environment_failure(exc):  # out of memory, disk full, network: the machine, not a bug
                err_console.print(f"[bold red]Error:[/] {type(exc).__name__}: {exc}", soft_wrap=True)
                _print_diagnosis(ctx, exc)
                raise typer.Exit(1) from None
            err_console.print(f"[bold red]Internal error:[/] {type(exc).__name__}: {exc}", soft_wrap=True)
            _print_diagnosis(ctx, exc)
            err_console.print(
                "This is a bug in Forge, not in your data or settings. Run the command again with "
                "FORGE_DEBUG=1 to see the traceback, and report it.",
                soft_wrap=True,
            )
            raise typer.Exit(2) from None


def _print_diagnosis(ctx: typer.Context, exc: BaseException) -> None:
    from forgellm.cli.failure import diagnose, print_diagnosis
    from forgellm.cli.output import err_console

    fix = diagnose(ctx.invoked_subcommand or "forge", exc)
    if fix is not None:
        print_diagnosis(fix, err_console)


app = typer.Typer(
    cls=ForgeGroup,
    name="forge",
    help="Fine-tune a language model from your own data and a goal in plain words.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"forge {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """Fine-tune a language model from your own data and a goal in plain words."""
