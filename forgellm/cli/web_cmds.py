"""`forge ui` (the project's dashboard in a browser) and `forge serve` (an OpenAI-compatible API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from forgellm.cli.app import app
from forgellm.cli.output import console, err_console

HOST_HELP = "Address to listen on. Anything but loopback (127.0.0.1, ::1) requires a token on every request."


@app.command()
def ui(
    directory: Path = typer.Argument(Path("."), help="The project folder (holds forge.yaml)."),
    host: str = typer.Option("127.0.0.1", "--host", help=HOST_HELP),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port (0: any free one)."),
    open_browser: bool = typer.Option(False, "--open", help="Open the dashboard in the default browser."),
) -> None:
    """The project in a browser: runs with live charts, data, eval, exports, a chat playground, and the
    OpenAI-compatible API of its models under /v1."""
    from forgellm.project import require_project
    from forgellm.web.app import create_app
    from forgellm.web.chat_page import chat_router
    from forgellm.web.dashboard import dashboard_router
    from forgellm.web.models import ModelHost
    from forgellm.web.openai_api import openai_router

    root = require_project(directory)
    access = _access(host, port)
    models = ModelHost.for_project(root)
    routers = [dashboard_router(root), chat_router(models, root), openai_router(models)]
    _serve(create_app(access, routers, title=f"Forge · {root.name}"), access, port, "dashboard", models, open_browser)


@app.command()
def serve(
    model: str | None = typer.Argument(
        None,
        help="export | run | base | PATH (model folder, LoRA adapter, export folder or .gguf). "
        "Default: the newest export, else the newest training run, else the base model.",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help=HOST_HELP),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0: any free one)."),
    project: Path = typer.Option(Path("."), "--project", "-C", help="The project folder (holds forge.yaml)."),
) -> None:
    """Serve a model behind an OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models),
    with the chat template and stop tokens it was trained with."""
    from forgellm.project import find_project
    from forgellm.web.app import create_app
    from forgellm.web.models import ModelHost
    from forgellm.web.openai_api import openai_router

    root = find_project(project)  # optional: a PATH model can be served from anywhere
    access = _access(host, port)
    models = ModelHost.for_model(model, root)
    _serve(create_app(access, [openai_router(models)], title="Forge API"), access, port, "API", models)


def _access(host: str, port: int) -> Any:
    """The access rule, and the port checked, before any model or record is read."""
    from forgellm.web.launch import check_port
    from forgellm.web.security import access_for

    access = access_for(host)
    check_port(host, port)
    return access


def _serve(application: Any, access: Any, port: int, what: str, models: Any, open_browser: bool = False) -> None:
    from forgellm.web.launch import address, serve
    from forgellm.web.security import TOKEN_ENV

    def started(bound: int) -> None:
        url = address(access.host, bound, access)
        console.print(f"Forge {what}: [bold]{escape(url)}[/]", soft_wrap=True)
        api = address(access.host, bound, path="/v1")
        console.print(f"OpenAI-compatible API: base_url {escape(api)}", soft_wrap=True)
        if access.token:
            console.print("  (api_key: the token in the address above)", soft_wrap=True)
        if access.generated:
            err_console.print(
                f"[yellow]Listening on {escape(access.host)}:[/] every request needs the token in this address "
                f"(a new one each start; set {TOKEN_ENV} to keep one).",
                soft_wrap=True,
            )
        err_console.print("[dim]Ctrl-C stops the server.[/]")
        if open_browser:
            import webbrowser

            webbrowser.open(url)

    try:
        serve(application, access.host, port, on_started=started)
    finally:
        models.close()  # ends a generation in progress; the queued requests are answered with an error
    err_console.print("Server stopped.")
