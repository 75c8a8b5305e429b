"""`forge docker build|status`: Forge's images per GPU architecture (runtime/)."""

from __future__ import annotations

from pathlib import Path

import typer

from forgellm.cli.app import app
from forgellm.cli.output import console, err_console, print_json, signals_for_main_thread
from forgellm.units import human_bytes

docker_app = typer.Typer(
    help="Forge's Docker images: build them for this machine's GPUs, see what they hold.", no_args_is_help=True
)
app.add_typer(docker_app, name="docker")

ARCH_HELP = (
    "auto (this machine's GPUs), blackwell (RTX 50xx, B200), hopper (H100/H200), ada (RTX 40xx), "
    "ampere (RTX 30xx, A100) or cpu."
)


def _gpu_capabilities() -> list[str]:
    from forgellm.hardware.probe import probe_hardware

    return [gpu.compute_capability for gpu in probe_hardware().gpus]


def resolve_arch(name: str):
    """``--arch``: a tag of the brief, or auto = the tag for this machine's GPUs."""
    from forgellm.runtime.build import arch_named
    from forgellm.runtime.images import arch_for_machine

    return arch_for_machine(_gpu_capabilities()) if name == "auto" else arch_named(name)


class _BuildView:
    """The build's one-line display: a bar over the Dockerfile's steps, the time, the latest instruction."""

    def __init__(self) -> None:
        import time

        self.started, self.step, self.total, self.latest = time.monotonic(), 0, 0, ""

    def __rich__(self):
        import time

        from rich.markup import escape
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        elapsed = int(time.monotonic() - self.started)
        line = Table.grid(padding=(0, 1))
        line.add_row(
            "build",
            ProgressBar(total=self.total or None, completed=max(self.step - 1, 0), width=30),
            f"step {self.step}/{self.total}" if self.total else "",
            f"{elapsed // 60}:{elapsed % 60:02d}",
            f"[dim]{escape(self.latest[:60])}",
        )
        return line


@docker_app.command("build")
def build(
    arch: str = typer.Option("auto", "--arch", help=ARCH_HELP),
    base_image: str | None = typer.Option(
        None, "--base-image", help="Build on this image (default python:3.11-slim-bookworm, pulled if missing)."
    ),
    local_base: bool = typer.Option(
        False, "--local-base", help="Build on a Debian base made here with mmdebstrap: no registry needed."
    ),
    wheels: Path | None = typer.Option(
        None, "--wheels", help="Install from this folder of wheels, without network (e.g. made by `pip download`)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Rebuild every layer."),
) -> None:
    """Build Forge's image for a GPU architecture (one CUDA 12.8 build serves all four GPU tags)."""
    from rich.live import Live

    from forgellm.runtime.base import build_log_dir
    from forgellm.runtime.build import build_image
    from forgellm.runtime.images import arches_of

    chosen = resolve_arch(arch)
    from forgellm.runtime.engine import require_engine

    require_engine("Building Forge's image").close()  # before any output: no engine, no build
    if base_image and local_base:
        from forgellm.errors import ErrorCode, ForgeError

        raise ForgeError(
            "--base-image and --local-base both name the base.", fix="Pass one of them.", code=ErrorCode.USAGE_INVALID
        )
    shared = [a.name for a in arches_of(chosen.variant)]
    console.print(
        f"Building [bold]forge:{chosen.name}[/] ({chosen.gpus}): torch {chosen.variant.name}"
        + (f", serves compute capabilities {' '.join(chosen.variant.capabilities)}" if chosen.variant.cuda else "")
        + (f"; the same build is tagged {', '.join('forge:' + n for n in shared)}" if len(shared) > 1 else "")
    )
    view = _BuildView()
    # Live renders `view` from its own thread; the build's callbacks only set plain attributes. That thread is
    # started with Ctrl-C blocked: a CI run's stack dump showed an interrupted build whose main thread still sat
    # in the build stream's socket read a minute later, the signal having gone to the display's thread.
    live = Live(view, console=console, refresh_per_second=4, transient=False)
    with signals_for_main_thread():  # Ctrl-C must reach the thread reading the build's stream
        live.start()
    with live:

        def on_step(step: int, total: int, instruction: str) -> None:
            view.step, view.total, view.latest = step, total, instruction

        def on_line(line: str) -> None:  # the latest line under the bar; the whole output goes to the log
            if not line.startswith(("Step ", " ---> ", "Removing intermediate")):
                view.latest = line.strip()

        try:
            result = build_image(
                chosen, base_image=base_image, local_base=local_base, wheels=wheels, no_cache=no_cache,
                log_dir=build_log_dir(), on_step=on_step, on_line=on_line,
            )  # fmt: skip
        except KeyboardInterrupt:
            err_console.print(
                f"[yellow]Interrupted.[/] The build stopped; no image was tagged (forge:{chosen.name} is unchanged)."
            )
            raise typer.Exit(130) from None
        view.step, view.latest = view.total, "done"
    console.print(
        f"[green]Built[/] {result.image_id.split(':')[-1][:12]} in {result.seconds:g} s on {result.base_image}; "
        f"tagged {', '.join(result.tags)}. Build log: {result.log_path}"
    )
    console.print(f"Next: [bold]forge docker probe --arch {chosen.name}[/] to see what the container sees.")


@docker_app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Print the status as JSON.")) -> None:
    """The Docker engine, Forge's images (tags, Forge version, torch build, base, wheels) and this machine's tag."""
    from rich.markup import escape

    from forgellm.runtime.status import docker_status

    capabilities = _gpu_capabilities()
    report = docker_status(capabilities)
    if as_json:
        print_json(report.to_dict())
        return
    if report.engine is None:
        from forgellm.runtime.engine import ENGINE_INSTALL

        console.print(f"[yellow]Docker:[/] {escape(report.problem or '')}.", soft_wrap=True)
        console.print(f"[bold]Fix:[/] {escape(ENGINE_INSTALL)}", soft_wrap=True)
        return
    gpus = (
        "this machine has no NVIDIA GPU"
        if not capabilities
        else ("can be passed to containers" if report.gpu_passthrough is None else escape(report.gpu_passthrough))
    )
    console.print(f"Docker engine {escape(report.engine)}; GPUs: {gpus}.", soft_wrap=True)
    if not report.images:
        console.print("No Forge images on this engine yet.")
    for image in report.images:
        state = {True: "[green]built from this Forge[/]", False: "[yellow]built from other Forge source[/]"}
        console.print(
            f"[bold]{escape(', '.join(image.tags))}[/]  [dim]{image.image_id} · {human_bytes(image.size_bytes)} · "
            f"{image.created}[/]"
        )
        if image.current is None:
            console.print("  a base image (forge docker build --local-base)")
            continue
        console.print(
            f"  Forge {escape(image.forge_version or '?')} ({state[image.current]})"
            + f" · torch {escape(image.variant or '?')}"
            + (f" for compute capabilities {escape(image.capabilities)}" if image.capabilities else "")
            + f" · base {escape(image.base_image or '?')} · from {escape(image.built_from or '?')}",
            soft_wrap=True,
        )
    mine = report.machine_image
    verdict = "not built" if mine is None else "built" if mine.current else "built from other Forge source"
    advice = "" if mine is not None and mine.current else f": [bold]forge docker build --arch {report.machine_arch}[/]"
    console.print(f"This machine runs [bold]forge:{report.machine_arch}[/], {verdict}{advice}.")
