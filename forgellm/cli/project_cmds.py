"""`forge init`, `forge status`, `forge login`, `forge logout`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from forgellm.cli.app import app
from forgellm.cli.output import console, print_json


class AdvisorChoice(StrEnum):
    rules = "rules"
    gemini = "gemini"
    openai = "openai"


class ProviderChoice(StrEnum):
    gemini = "gemini"
    openai = "openai"


@app.command()
def init(
    directory: Path = typer.Argument(Path("."), help="Project folder (created if missing)."),
    name: str | None = typer.Option(None, help="Project name (default: the folder's name)."),
    model: str | None = typer.Option(None, "--model", help="Model to fine-tune (default: smollm2-135m, offline)."),
    advisor: AdvisorChoice = typer.Option(AdvisorChoice.rules, help="Who proposes the plan."),
    advisor_model: str | None = typer.Option(None, help="Advisor model name, e.g. gemini-2.5-flash."),
    base_url: str | None = typer.Option(None, help="Base URL of an OpenAI-compatible server (or a Gemini proxy)."),
    api_key: str | None = typer.Option(
        None, help="Store this advisor API key in your user credentials file (0600), never in the project."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Create a project folder: forge.yaml, data/, runs/, exports/, reports/, .gitignore."""
    from forgellm.project import advisor_settings, init_project

    settings = advisor_settings(advisor.value, advisor_model, base_url)
    result = init_project(directory, name=name, model_ref=model, advisor=settings, api_key=api_key)
    if as_json:
        print_json(result.to_dict())
        return
    console.print(f"Project [bold]{result.project_dir}[/]")
    for item in result.created:
        console.print(f"  [green]created[/]  {item}")
    for item in result.existed:
        console.print(f"  [dim]exists[/]   {item} [dim](kept)[/]")
    for warning in result.warnings:
        console.print(f"  [yellow]note[/]     {warning}")
    if result.credentials_file:
        console.print(f"  [green]stored[/]   {settings.provider} API key in {result.credentials_file} (mode 0600)")
    console.print("Next: [bold]forge status[/] to see where the project stands.")


@app.command()
def status(
    directory: Path = typer.Argument(Path("."), help="Project folder (or any folder inside it)."),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON (every run, stable keys)."),
) -> None:
    """Where the project stands: plan, data (current or stale), runs, exports, eval, machine, and the next command."""
    from forgellm.status import project_status

    report = project_status(directory)
    if as_json:
        print_json(report)
        return
    _render_status(report)


def _render_status(report: dict[str, Any]) -> None:
    from forgellm.cli.status_view import render_status

    render_status(report, console)


@app.command()
def login(
    provider: ProviderChoice = typer.Option(ProviderChoice.gemini, help="Which advisor service the key is for."),
    base_url: str | None = typer.Option(
        None, "--base-url", help="Also let this key go to this server (a proxy, a compatible API you trust)."
    ),
) -> None:
    """Store an advisor API key in your user credentials file (mode 0600). Input is hidden."""
    from forgellm.config.key_hosts import allow_origin
    from forgellm.config.settings import KEY_ENV_VARS, key_status, store_api_key

    key = typer.prompt(f"{provider.value} API key", hide_input=True)
    path = store_api_key(provider.value, key)
    console.print(f"Stored the {provider.value} key in {path} (readable by you only).")
    if base_url:
        console.print(f"The {provider.value} key may now also go to {allow_origin(provider.value, base_url)}.")
    current = key_status(provider.value)
    if current.source in KEY_ENV_VARS[provider.value]:
        console.print(f"[yellow]note[/] {current.source} is set in your environment and takes precedence.")


@app.command()
def logout(
    provider: ProviderChoice = typer.Option(ProviderChoice.gemini, help="Which stored key to remove."),
) -> None:
    """Remove a stored advisor API key."""
    from forgellm.config.settings import credentials_path, remove_api_key

    if remove_api_key(provider.value):
        console.print(f"Removed the {provider.value} key from {credentials_path()}.")
    else:
        console.print(f"No stored {provider.value} key (nothing to remove).")
