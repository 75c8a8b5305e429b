"""`forge export`: merged weights, GGUF files, an Ollama Modelfile and a model card from a training run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from forgellm.cli.app import app
from forgellm.cli.output import StageBar, console, err_console, print_json
from forgellm.cli.runtime_opt import choose, run_in_container, runtime_option
from forgellm.runtime.container import local_model
from forgellm.units import human_bytes


@app.command()
def export(
    run: str | None = typer.Option(
        None, "--run", help="The run to export (id or folder; default: the newest completed)."
    ),
    quant: str | None = typer.Option(
        None,
        "--quant",
        help="GGUF types, comma-separated: f16, bf16, q8_0 (built in), q4_k_m, q5_k_m, q6_k ... "
        "(need llama-cpp-python). Default: export.quantizations in forge.yaml.",
    ),
    name: str | None = typer.Option(None, "--name", help="Export and Ollama model name (default: the project's)."),
    no_ollama: bool = typer.Option(False, "--no-ollama", help="Do not register with a running Ollama server."),
    push_to_hub: str | None = typer.Option(
        None, "--push-to-hub", metavar="REPO", help="Also upload the export to this Hugging Face repo (HF_TOKEN)."
    ),
    project: Path = typer.Option(Path("."), "--project", "-C", help="The project folder (holds forge.yaml)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    runtime: str | None = runtime_option(),  # type: ignore[assignment]
) -> None:
    """Export a trained run: merged Hugging Face weights, GGUF, Ollama Modelfile, model card."""
    from forgellm.errors import ErrorCode, ForgeError
    from forgellm.export.gguf_convert import parse_quants
    from forgellm.export.pipeline import export_model
    from forgellm.project import load_project

    layout, config = load_project(project)
    root = layout.root
    choice = choose(runtime, config.runtime, "Exporting", gpu_work=True, quiet=as_json)
    if choice.name == "docker":
        options = {"--run": run, "--quant": quant, "--name": name, "--push-to-hub": push_to_hub}
        args = ["-C", str(root), *(a for k, v in options.items() if v is not None for a in (k, v))]
        args += [*(["--no-ollama"] if no_ollama else []), *(["--json"] if as_json else [])]
        run_in_container(choice, "export", args, root, local_model(config.model.ref, root))
    quants = parse_quants(quant) if quant is not None else None
    if as_json:
        result = export_model(
            layout, config, run=run, quants=quants, name=name, ollama=not no_ollama, push_to_hub=push_to_hub
        )
        print_json(result.to_dict())
    else:
        with _ExportDisplay() as display:
            result = export_model(
                layout,
                config,
                run=run,
                quants=quants,
                name=name,
                ollama=not no_ollama,
                push_to_hub=push_to_hub,
                progress=display.progress(),
            )
        _render_result(result, root)
    if result.ollama.error:
        raise ForgeError(
            f"Ollama refused to create the model: {result.ollama.error}",
            fix=f"The export is complete in {result.folder}; fix the cause, then run: {result.ollama.command}",
            code=ErrorCode.OLLAMA_FAILED,
        )


class _ExportDisplay(StageBar):
    """A line per finished stage and a bar with speed and time left while GGUF tensors are written."""

    def __init__(self) -> None:
        super().__init__(err_console, unit="tensors")

    def progress(self) -> Any:
        from forgellm.export.pipeline import ExportProgress

        return ExportProgress(stage=self.stage, tensors=lambda _label, done, total: self.advance(done, total))


def _size(path: Path) -> str:
    if path.is_dir():
        return human_bytes(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()))
    return human_bytes(path.stat().st_size)


def _render_result(result: Any, root: Path) -> None:
    from rich.table import Table

    def rel(path: Path) -> str:
        try:
            return str(path.relative_to(root))
        except ValueError:
            return str(path)

    verb = "Replaced" if result.replaced else "Exported"
    console.print(f"[bold green]{verb}[/] run {result.run_id} ({result.checkpoint}) to [bold]{rel(result.folder)}/[/]")
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("[bold]Merged weights[/]", f"{rel(result.merged_dir)}/  ({_size(result.merged_dir)})")
    for quant, path in result.gguf_files.items():
        table.add_row(f"[bold]GGUF {quant.upper()}[/]", f"{rel(path)}  ({_size(path)})")
    if result.modelfile:
        table.add_row("[bold]Modelfile[/]", rel(result.modelfile))
    table.add_row("[bold]Model card[/]", rel(result.card))
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds_by_stage.items())
    table.add_row("[bold]Time[/]", stages)
    console.print(table)
    for warning in result.warnings:
        err_console.print(f"[yellow]warning[/] {warning}", soft_wrap=True)
    ollama = result.ollama
    if ollama.registered:
        console.print(
            f"Ollama: created [bold]{ollama.model}[/] at {ollama.host}; it answered: "
            f"{(ollama.smoke_answer or '').strip()[:120]!r}"
        )
        console.print(f"Chat with it: [bold]ollama run {ollama.model}[/]")
    elif result.modelfile and not ollama.error:
        reason = "no Ollama server answers at " + ollama.host if ollama.host else "registration skipped"
        console.print(
            f"Ollama: {reason}. To add the model later:\n  [bold]cd {root} && {ollama.command}[/]", soft_wrap=True
        )
    if result.hub_url:
        console.print(f"Hugging Face Hub: {result.hub_url}")
    console.print("Chat with it here: [bold]forge inference --model export[/]")
