"""`forge config show | validate | upgrade`."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from forgellm.cli.app import ForgeGroup, app
from forgellm.cli.output import console, print_json

config_app = typer.Typer(cls=ForgeGroup, help="Show, check and upgrade forge.yaml.", no_args_is_help=True)
app.add_typer(config_app, name="config")

PATH_OPTION = typer.Option(Path("forge.yaml"), "--path", "-p", help="The forge.yaml to read (or its folder).")


@config_app.command("show")
def show(
    path: Path = PATH_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the effective config as JSON."),
) -> None:
    """Print the effective config: forge.yaml + defaults + FORGE_* environment overrides."""
    from forgellm.config.io import dump_config, load_config

    loaded = load_config(path)
    if as_json:
        print_json(loaded.config.model_dump(mode="json"))
        return
    from rich.syntax import Syntax

    console.print(Syntax(dump_config(loaded.config), "yaml", theme="ansi_dark", background_color="default"))
    for key, variable in loaded.env_overrides.items():
        console.print(f"[yellow]note[/] {key} comes from the environment variable {variable}")


@config_app.command("validate")
def validate(
    path: Path = PATH_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the verdict as JSON."),
) -> None:
    """Check forge.yaml (and that its model exists); every problem is reported at once. Exit 1 when invalid."""
    from forgellm.errors import ForgeError
    from forgellm.project.check import validate_config

    try:
        loaded = validate_config(path)
    except ForgeError as exc:
        if not as_json:
            raise
        print_json({"valid": False, "code": exc.code, "problems": exc.details or [exc.message], "fix": exc.fix})
        raise typer.Exit(1) from None
    if as_json:
        print_json(
            {
                "valid": True,
                "problems": [],
                "file_version": loaded.file_version,
                "migration_notes": loaded.migration_notes,
                "env_overrides": loaded.env_overrides,
            }
        )
        return
    console.print(f"[green]✓[/] {loaded.path} is valid.")
    if loaded.migration_notes:
        console.print(f"[yellow]note[/] it uses the older schema version {loaded.file_version}; it was read as:")
        for note in loaded.migration_notes:
            console.print(f"  • {note}")
        console.print("Run [bold]forge config upgrade[/] to rewrite it in the current layout.")


@config_app.command("upgrade")
def upgrade(path: Path = PATH_OPTION) -> None:
    """Rewrite an older forge.yaml in the current schema (the old file is kept as .bak)."""
    from forgellm.config.io import load_config, save_config

    loaded = load_config(path)
    if not loaded.migration_notes:
        console.print(f"{loaded.path} is already in the current layout; nothing to do.")
        return
    if loaded.env_overrides:
        from forgellm.errors import ErrorCode, ForgeError

        raise ForgeError(
            "FORGE_* overrides are set; upgrading now would write them into forge.yaml.",
            fix="Unset " + ", ".join(loaded.env_overrides.values()) + " and run the upgrade again.",
            code=ErrorCode.USAGE_INVALID,
        )
    assert loaded.path is not None  # load_config always sets it
    backup = loaded.path.with_name(f"{loaded.path.name}.v{loaded.file_version}.bak")
    shutil.copy2(loaded.path, backup)
    save_config(loaded.config, loaded.path)
    console.print(f"Upgraded {loaded.path} to the current layout; the old file is {backup.name}.")
    for note in loaded.migration_notes:
        console.print(f"  • {note}")
