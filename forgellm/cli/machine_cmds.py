"""`forge hardware` and `forge models`: what this machine has, and which models fit it."""

from __future__ import annotations

from pathlib import Path

import typer

from forgellm.cli.app import app
from forgellm.cli.output import console, print_json
from forgellm.units import human_bytes

_VERDICT_MARK = {
    "fits": "[green]✓[/]",
    "tight": "[yellow]≈[/]",
    "no": "[red]✗[/]",
    "needs GPU": "[dim]GPU only[/]",
}


@app.command()
def hardware(
    path: Path = typer.Option(Path("."), help="Where free disk space is measured."),
    model: str | None = typer.Option(
        None, "--model", help="The model whose training precision to show (default: the project's, if any)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the probe as JSON."),
) -> None:
    """Probe CPU, memory, disk and GPUs (no torch needed), and the precision training would use."""
    from forgellm.hardware.precision import decide_precision
    from forgellm.hardware.probe import probe_hardware

    info = probe_hardware(path)
    from forgellm.models.catalog import catalog_key

    model_key = catalog_key(model) if model else _project_model(path)
    precision = decide_precision(info, model_key=model_key)
    if as_json:
        print_json({**info.to_dict(), "precision": {**precision.to_dict(), "model": model_key}})
        return
    console.print(f"[bold]{info.accelerator}[/]")
    console.print(
        f"CPU      {info.cpu_physical_cores} physical / {info.cpu_logical_cores} logical cores ({info.machine})"
    )
    console.print(f"Memory   {human_bytes(info.ram_available_bytes)} available of {human_bytes(info.ram_total_bytes)}")
    console.print(f"Disk     {human_bytes(info.disk_free_bytes)} free at {info.disk_path}")
    for gpu in info.gpus:
        console.print(
            f"GPU {gpu.index}    {gpu.name}: {human_bytes(gpu.vram_free_bytes)} free of "
            f"{human_bytes(gpu.vram_total_bytes)}, sm_{gpu.compute_capability.replace('.', '')} ({gpu.arch})"
        )
    if info.gpus:
        console.print(f"Driver   {info.driver_version} (CUDA {info.cuda_driver_version})")
    if info.mps:
        console.print("Apple    Metal (MPS) available")
    console.print(f"bf16     {info.bf16.summary}")
    for_model = f" for {model_key}" if model_key else ""
    console.print(f"Training precision Forge would use{for_model}: [bold]{precision.precision}[/]", soft_wrap=True)
    console.print(f"[dim]{precision.reason}[/]", soft_wrap=True)
    for note in info.notes:
        console.print(f"[dim]note: {note}[/]")


def _project_model(path: Path) -> str | None:
    """The catalog key (or reference) of the project's model, when ``path`` is inside a project."""
    from forgellm.config.io import load_config
    from forgellm.errors import ForgeError
    from forgellm.models.catalog import catalog_key
    from forgellm.project import find_project

    root = find_project(path)
    if root is None:
        return None
    try:
        return catalog_key(load_config(root).config.model.ref)
    except ForgeError:
        return None


@app.command()
def models(
    seq_len: int = typer.Option(1024, min=16, help="Training sequence length assumed for the memory check."),
    micro_batch: int = typer.Option(1, min=1, help="Micro-batch size assumed for the memory check."),
    as_json: bool = typer.Option(False, "--json", help="Print the catalog and fit verdicts as JSON."),
) -> None:
    """The model catalog, and whether each model fits this machine for LoRA / QLoRA / full fine-tuning."""
    from forgellm.hardware.memory import fit_table
    from forgellm.hardware.probe import probe_hardware
    from forgellm.models.catalog import catalog

    info = probe_hardware()
    rows = {row.model: row for row in fit_table(info, seq_len=seq_len, micro_batch=micro_batch)}
    specs = catalog()
    if as_json:
        print_json(
            {
                "hardware": {"accelerator": info.accelerator, "precision": info.preferred_precision},
                "assumptions": {
                    "seq_len": seq_len,
                    "micro_batch": micro_batch,
                    "gradient_checkpointing": True,
                },
                "models": [
                    {
                        **spec.to_dict(),
                        "fit": {m: getattr(rows[spec.key], m).to_dict() for m in ("lora", "qlora", "full")},
                    }
                    for spec in specs
                ],
            }
        )
        return
    _render_models(specs, rows, info.accelerator, seq_len, micro_batch)


def _render_models(specs, rows, accelerator: str, seq_len: int, micro_batch: int) -> None:
    from rich import box
    from rich.table import Table

    width = console.width
    table = Table(
        title=f"Models for this machine ({accelerator}; seq {seq_len}, micro-batch {micro_batch})",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    columns = ["Alias", "Params", "Context", "LoRA", "QLoRA", "Full"]
    if width >= 100:
        columns.insert(3, "Template")
    if width >= 160:  # licence and use-cases only where they fit without folding every word
        columns += ["Licence", "Good for"]
    for column in columns:
        table.add_column(column, no_wrap=column != "Good for", overflow="fold")
    for spec in specs:
        row = rows[spec.key]
        values = {
            "Alias": spec.key + (" [cyan]*[/]" if spec.offline else ""),
            "Params": f"{spec.params / 1e9:.2f}B",
            "Context": f"{spec.context_length // 1024}k",
            "Template": spec.chat_template,
            "Licence": spec.licence + (" (gated)" if spec.gated else ""),
            "Good for": spec.good_for,
        }
        for method, column in (("lora", "LoRA"), ("qlora", "QLoRA"), ("full", "Full")):
            fit = getattr(row, method)
            values[column] = f"{_VERDICT_MARK.get(fit.verdict, fit.verdict)} {fit.estimate.total_bytes / 1e9:.1f}G"
        table.add_row(*(values[c] for c in columns))
    console.print(table)
    console.print(
        "[green]✓[/] fits  [yellow]≈[/] tight (>85% of memory)  [red]✗[/] does not fit  "
        "[dim]GPU only[/]: needs CUDA  [cyan]*[/] works offline (bundled)"
    )
    console.print(
        "[dim]Memory = weights + LoRA/optimizer states + activations (gradient checkpointing) + logits "
        "+ overhead; `forge models --json` has the breakdown, licences and hub ids. Put a name in "
        "forge.yaml `model.ref` (or `forge init --model NAME`); add `-base` for the base weights.[/]"
    )
