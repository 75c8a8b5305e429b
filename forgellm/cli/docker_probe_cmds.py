"""`forge docker probe`: what a container of Forge's image sees (runtime/probe_run.py), and whether its torch
can train on those GPUs. Exit code 1 when it cannot (the findings say which tag to build instead)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import typer

from forgellm.cli.docker_cmds import docker_app
from forgellm.cli.output import console, print_json
from forgellm.units import human_bytes


class ArchChoice(StrEnum):
    auto = "auto"
    blackwell = "blackwell"
    hopper = "hopper"
    ada = "ada"
    ampere = "ampere"
    cpu = "cpu"


@docker_app.command("probe")
def probe_command(
    arch: ArchChoice = typer.Option(ArchChoice.auto, "--arch", help="Which image: auto = the one for this machine."),
    image: str | None = typer.Option(None, "--image", help="Probe this image tag instead of forge:<arch>."),
    as_json: bool = typer.Option(False, "--json", help="Print the record and its findings as JSON."),
) -> None:
    """Run the hardware probe inside the image: GPUs, VRAM, capability, driver, CUDA, torch and its arch flags.

    The record is kept under FORGE_HOME; `forge plan` plans with its figures while the image is unchanged.
    Exit code 1 when the image cannot train on what its container sees (the findings name the --arch to build).
    """
    from forgellm.hardware.probe import probe_hardware
    from forgellm.runtime.probe_record import check_image_for_gpus, probe_path
    from forgellm.runtime.probe_run import machine_image, probe_image

    host = probe_hardware()
    tag = image or machine_image(host, arch.value)
    probe = probe_image(tag, host=host)
    problems = check_image_for_gpus(probe)
    if as_json:
        print_json({**probe.to_dict(), "problems": problems, "saved": str(probe_path(tag))})
    else:
        _render(probe, problems)
    if problems:
        raise typer.Exit(1)


def _render(probe: Any, problems: list[str]) -> None:
    seen, torch, limits = probe.hardware, probe.torch, probe.limits
    console.print(f"[bold]{probe.tag}[/] [dim]({str(probe.image_id)[:19]})[/] — what its container sees:")
    if not probe.gpus:
        console.print("GPUs     none")
    for gpu in probe.gpus:
        console.print(f"GPU {gpu.get('index')}    {gpu.get('name')}: {human_bytes(gpu.get('vram_total_bytes') or 0)}, "
                      f"compute capability {gpu.get('compute_capability')}")  # fmt: skip
    if seen.get("driver_version"):
        console.print(f"Driver   {seen.get('driver_version')} (CUDA {seen.get('cuda_driver_version')})")
    if torch is not None:
        cuda = f"CUDA {torch.get('cuda')}" if torch.get("cuda") else "CPU build"
        flags = " ".join(torch.get("arch_flags") or []) or "none"
        console.print(f"torch    {torch.get('version')} ({cuda}); arch flags: {flags}; "
                      f"{torch.get('device_count', 0)} CUDA device(s)")  # fmt: skip
    bf16 = seen.get("bf16") if isinstance(seen.get("bf16"), dict) else {}
    console.print(f"bf16     {bf16.get('summary', 'unknown')}")
    cpus = limits.get("cpus") or limits.get("cpu_affinity") or seen.get("cpu_logical_cores")
    memory = limits.get("memory_bytes") or seen.get("ram_total_bytes") or 0
    limited = " (container limit)" if limits.get("memory_bytes") else ""
    console.print(f"CPU/RAM  {cpus} CPUs, {human_bytes(memory)}{limited}")
    if probe.gpu_note:
        console.print(f"[yellow]GPUs not passed:[/] {probe.gpu_note}", soft_wrap=True)
    for note in probe.notes:
        console.print(f"[dim]{note}[/]", soft_wrap=True)
    for problem in problems:
        console.print(f"[red]✗[/] {problem}", soft_wrap=True)
    if not problems:
        console.print("[green]✓[/] This image can train on what its container sees.")
