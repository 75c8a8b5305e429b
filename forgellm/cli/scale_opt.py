"""`--distributed --gpus --nodes --node-rank --main-address --main-port` of `forge train` and `forge ignite`:
several GPUs, or several machines (training/launch.py decides and launches)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from forgellm.training.launch import LaunchOptions

STRATEGIES = ("auto", "none", "ddp", "fsdp", "deepspeed")


def distributed_option() -> Any:
    return typer.Option(
        None, "--distributed", metavar="auto|none|ddp|fsdp|deepspeed",
        help="How to spread training over GPUs (default: training.distributed in forge.yaml, auto: DDP when the "
        "model fits one GPU, else FSDP sharding).",
    )  # fmt: skip


def gpus_option() -> Any:
    return typer.Option(None, "--gpus", min=1, help="GPUs to use on this machine (default: all when distributed).")


def nodes_option() -> Any:
    return typer.Option(None, "--nodes", min=1, help="Machines training together (run the command on each).")


def node_rank_option() -> Any:
    return typer.Option(0, "--node-rank", min=0, help="This machine's number in a multi-machine run (0 = main).")


def main_address_option() -> Any:
    return typer.Option(None, "--main-address", help="The main machine's IP address (multi-machine runs).")


def main_port_option() -> Any:
    return typer.Option(None, "--main-port", min=1, max=65535, help="Port the machines meet on (default 29500).")


@dataclass(frozen=True)
class ScaleFlags:
    distributed: str | None = None
    gpus: int | None = None
    nodes: int | None = None
    node_rank: int = 0
    main_address: str | None = None
    main_port: int | None = None

    def overrides(self) -> dict[str, Any] | None:
        """The flags that change training.distributed / gpus / nodes for this run (forge.yaml stays)."""
        from forgellm.errors import ErrorCode, ForgeError

        if self.distributed is not None and self.distributed not in STRATEGIES:
            raise ForgeError(
                f"Unknown --distributed {self.distributed!r}.",
                fix=f"Use one of: {', '.join(STRATEGIES)}.",
                code=ErrorCode.USAGE_INVALID,
            )
        values = {"distributed": self.distributed, "gpus": self.gpus, "nodes": self.nodes}
        return {key: value for key, value in values.items() if value is not None} or None

    def launch(self) -> LaunchOptions:
        from forgellm.training.launch import LaunchOptions

        return LaunchOptions(node_rank=self.node_rank, main_address=self.main_address, main_port=self.main_port)
