"""`forge cloud launch|status|logs|down`: train on rented cloud GPUs through SkyPilot (cloud/)."""

from __future__ import annotations

from pathlib import Path

import typer

from forgellm.cli.app import app
from forgellm.cli.output import console, print_json

cloud_app = typer.Typer(
    help="Train on rented cloud GPUs (RunPod, Lambda, AWS, GCP, Azure, Kubernetes) through SkyPilot.",
    no_args_is_help=True,
)
app.add_typer(cloud_app, name="cloud")

PROJECT_HELP = "Project folder (default: here or above)."


def _project(project: Path):
    from forgellm.project import load_project

    return load_project(project)


def _print_plan(plan) -> None:
    from forgellm.units import human_bytes

    s = plan.to_dict()
    console.print(f"[bold]Cloud task[/] {s['name']} -> {s['task_file']}")
    console.print(f"  where      {s['provider']}")
    console.print(
        f"  GPUs       {s['accelerators']} x {s['nodes']} machine(s), {s['strategy']}: "
        f"{human_bytes(s['per_gpu_bytes'])} of {human_bytes(s['gpu_bytes'])} per GPU ({s['chosen_by']})"
    )
    console.print(f"  why        {s['why']}")
    console.print(f"  disk       {s['disk_gb']} GB; Forge from {s['install']}")
    console.print(f"  secrets    {', '.join(s['secrets']) or 'none'} (passed at launch, never written to the task)")
    if s["cost_per_hour"] is not None:
        console.print(
            f"  cost       about ${s['cost_per_hour']:.2f}/hour on {s['cost_provider']} ({s['instance_type']})"
        )
    else:
        console.print("  cost       unknown offline (SkyPilot's price catalog is not on this machine)")
    if not s["catalog_checked"]:
        console.print("  [dim]checked by SkyPilot's parser; whether the provider has this GPU is checked at launch[/]")


@cloud_app.command("launch")
def launch(
    provider: str | None = typer.Option(
        None,
        "--provider",
        help="runpod, lambda, aws, gcp, azure or kubernetes (default: the cheapest you have set up).",
    ),
    gpu: str | None = typer.Option(
        None, "--gpu", help="GPU type and count, e.g. H100:2 or A100-80GB (default: sized from the memory estimate)."
    ),
    nodes: int | None = typer.Option(None, "--nodes", min=1, help="Machines training together (default: forge.yaml)."),
    name: str | None = typer.Option(None, "--name", help="Name of the cloud machine (default: forge-<project>)."),
    image: str | None = typer.Option(
        None, "--image", help="A Forge Docker image in a registry the cloud can pull (default: install Forge with pip)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Launch without asking (the machine costs money from now on)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only build, check and show the task; launch nothing."),
    json_out: bool = typer.Option(False, "--json", help="Print the task summary as JSON."),
    project: Path = typer.Option(Path("."), "--project", "-C", help=PROJECT_HELP),
) -> None:
    """Rent cloud GPUs and run `forge train` on them; the task is written to .forge/cloud/NAME.yaml first."""
    from forgellm.cloud import launch as cloud
    from forgellm.cloud import sky_api
    from forgellm.errors import ErrorCode, ForgeError

    layout, config = _project(project)
    plan = cloud.plan_launch(layout, config, provider=provider, gpu=gpu, name=name, nodes=nodes, image=image)
    print_json(plan.to_dict()) if json_out else _print_plan(plan)
    if dry_run:
        return
    sky_api.require_access(provider)
    if not yes:
        import sys

        if not sys.stdin.isatty():
            raise ForgeError(
                "Launching would ask for confirmation, but there is no terminal to answer in.",
                fix="Add --yes to launch without asking (or --dry-run to only see the task).",
                code=ErrorCode.CONFIRMATION_NEEDED,
            )
        if not typer.confirm("Launch it? The cloud bills from now until `forge cloud down`.", default=False):
            raise ForgeError("Nothing was launched.", code=ErrorCode.DECLINED)
    state = cloud.launch(layout, plan)
    console.print(f"Launched [bold]{state.cluster}[/]. Follow it: forge cloud logs --follow; stop it: forge cloud down")


@cloud_app.command("status")
def status(
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
    project: Path = typer.Option(Path("."), "--project", "-C", help=PROJECT_HELP),
) -> None:
    """Whether the cloud machine of this project is up, and what it has."""
    from forgellm.cloud import sky_api
    from forgellm.cloud.state import CloudState

    layout, _ = _project(project)
    state = CloudState.load(layout)
    info = sky_api.cluster_status(state.cluster)
    if json_out:
        print_json(info)
        return
    console.print(f"[bold]{info['cluster']}[/]: {info['status']} — {info['resources'] or state.accelerators}")


@cloud_app.command("logs")
def logs(
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing as the training writes."),
    project: Path = typer.Option(Path("."), "--project", "-C", help=PROJECT_HELP),
) -> None:
    """The training's output on the cloud machine."""
    from forgellm.cloud import sky_api
    from forgellm.cloud.state import CloudState

    layout, _ = _project(project)
    state = CloudState.load(layout)
    sky_api.tail_logs(state.cluster, state.job_id, follow)


@cloud_app.command("down")
def down(
    no_sync: bool = typer.Option(False, "--no-sync", help="Do not copy runs/ back first (their files are lost)."),
    project: Path = typer.Option(Path("."), "--project", "-C", help=PROJECT_HELP),
) -> None:
    """Copy the runs back into this project, then take the cloud machine down (billing stops)."""
    from forgellm.cloud import sky_api
    from forgellm.cloud.state import CloudState

    layout, _ = _project(project)
    state = CloudState.load(layout)
    sky_api.cluster_status(state.cluster)  # gone already: say so before copying anything
    if not no_sync:
        sky_api.sync_runs(state.cluster, layout.runs_dir)
        console.print(f"Copied runs/ back from {state.cluster}.")
    sky_api.down(state.cluster)
    CloudState.clear(layout)
    console.print(f"[bold]{state.cluster}[/] is down; billing stopped.")
