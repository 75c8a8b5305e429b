"""How `forge train` starts an attempt: one worker process, or one per GPU through accelerate's launcher.

The decision (``plan_parallel``) reads forge.yaml's ``training.distributed / gpus / nodes / offload``
and the machine: ``auto`` is none on one device; on several GPUs the strategy the memory estimate
picks (hardware/parallel_memory.py, the same rule `forge plan` uses). It is written to the run folder
(parallel.json) for the worker's processes (parallel.py) and shown in the display.

The group is started with ``accelerate launch`` (torchrun underneath: rendezvous, one process per
GPU, LOCAL_RANK/RANK/WORLD_SIZE, multi-node) with ``--max_restarts 0``: a rank that fails ends the
group, and the supervisor restarts it from the last checkpoint, healed, as it does a single worker.

A machine without a GPU trains in one process; ``FORGE_DISTRIBUTED_CPU=1`` rehearses a multi-GPU
run there with one CPU process per "GPU" over gloo (the tests do; it is never faster).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgellm.errors import ErrorCode, ForgeError
from forgellm.project.layout import RunLayout
from forgellm.project.record_io import known_fields, read_object, write_object

if TYPE_CHECKING:
    from forgellm.config.schema import ForgeConfig
    from forgellm.hardware.probe import HardwareInfo

DISTRIBUTED_CPU_ENV = "FORGE_DISTRIBUTED_CPU"
# How long a machine of rank > 0 tries to reach the main machine before it gives up.
RENDEZVOUS_ENV = "FORGE_RENDEZVOUS_SECONDS"
RENDEZVOUS_SECONDS = 300.0
DEFAULT_MAIN_PORT = 29500


@dataclass(frozen=True)
class ParallelPlan:
    """parallel.json: how an attempt spreads over processes, written by the supervisor, read by each
    process. ``world_size`` = gpus × nodes."""

    strategy: str = "none"
    gpus: int = 1
    nodes: int = 1
    offload: bool = False
    device: str = "cuda"  # cuda | cpu (cpu: the gloo rehearsal of a multi-GPU run)
    reason: str = ""

    @property
    def world_size(self) -> int:
        return self.gpus * self.nodes

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy, "gpus": self.gpus, "nodes": self.nodes, "offload": self.offload,
            "device": self.device, "world_size": self.world_size, "reason": self.reason,
        }  # fmt: skip

    def save(self, run_dir: Path) -> None:
        write_object(RunLayout(run_dir).parallel, self.to_dict())

    @classmethod
    def load(cls, run_dir: Path) -> ParallelPlan:
        data = read_object(RunLayout(run_dir).parallel)
        return known_fields(cls, data) if data else cls()


@dataclass(frozen=True)
class LaunchOptions:
    """What differs between the machines of one multi-node run (command-line only, never forge.yaml)."""

    node_rank: int = 0
    main_address: str | None = None
    main_port: int | None = None


def cpu_rehearsal(environ: dict[str, str] | None = None) -> bool:
    return (environ if environ is not None else os.environ).get(DISTRIBUTED_CPU_ENV, "") == "1"


def plan_parallel(
    config: ForgeConfig, hardware: HardwareInfo | None = None, *, model_dir: Path | None = None
) -> ParallelPlan:
    """How this attempt spreads over processes, checked against the machine (ForgeError when it cannot).
    Without ``model_dir`` only the counts are checked (``auto`` on several GPUs needs the model's size)."""
    from forgellm.hardware.probe import probe_hardware

    t = config.training
    hardware = hardware or probe_hardware()
    rehearsal = not hardware.gpus and cpu_rehearsal()
    device = "cuda" if hardware.gpus else "cpu"
    visible = len(hardware.gpus) if hardware.gpus else (t.gpus or 1 if rehearsal else 0)
    if t.gpus is not None and t.gpus > max(visible, 1):
        raise _too_few_gpus(t.gpus, hardware)
    if not hardware.gpus and not rehearsal:
        if t.nodes > 1 or (t.distributed not in ("auto", "none") and (t.gpus or 1) > 1):
            raise _too_few_gpus(t.gpus or 2, hardware)
        return ParallelPlan("none", 1, 1, device=device, reason="one process: this machine has no GPU")
    gpus = t.gpus or (visible if t.distributed != "none" else 1)
    if t.distributed == "none" and t.nodes > 1:
        raise ForgeError(
            f"training.nodes is {t.nodes} but training.distributed is none.",
            fix="Set training.distributed to ddp or fsdp (or auto), or training.nodes to 1.",
            code=ErrorCode.CONFIG_INVALID,
        )
    if t.distributed == "none" or (gpus * t.nodes == 1 and t.distributed == "auto"):
        return ParallelPlan("none", 1, 1, device=device, reason="one process on one device")
    # An explicit strategy on one GPU still runs wrapped: FSDP's offload fits a model one GPU cannot hold.
    if model_dir is None and t.distributed == "auto" and not rehearsal:
        return ParallelPlan("auto", gpus, t.nodes, t.offload, device, "sized when the run starts")
    strategy, offload, reason = _strategy(config, hardware, gpus, model_dir, rehearsal)
    _check_engine(strategy, t.method, device, offload)
    return ParallelPlan(strategy, gpus, t.nodes, offload, device, reason)


def _too_few_gpus(asked: int, hardware: HardwareInfo) -> ForgeError:
    seen = f"{len(hardware.gpus)} GPU(s) ({hardware.accelerator})" if hardware.gpus else "no GPU"
    fix = (
        f"Use --gpus {len(hardware.gpus)} or fewer, or check CUDA_VISIBLE_DEVICES."
        if hardware.gpus
        else "Train on one process here (leave out --gpus), or on a GPU machine (`forge cloud launch`). "
        f"To rehearse a multi-GPU run on CPU processes, set {DISTRIBUTED_CPU_ENV}=1."
    )
    return ForgeError(
        f"Training is asked to use {asked} GPUs per machine, but this machine has {seen}.",
        fix=fix,
        code=ErrorCode.HARDWARE_UNSUPPORTED,
        data={"asked": asked, "visible": len(hardware.gpus)},
    )


def _strategy(
    config: ForgeConfig, hardware: HardwareInfo, gpus: int, model_dir: Path | None, rehearsal: bool
) -> tuple[str, bool, str]:
    t = config.training
    if t.distributed != "auto":
        return t.distributed, t.offload, f"training.distributed is {t.distributed} on {gpus} × {t.nodes} process(es)"
    if rehearsal:
        return "ddp", t.offload, f"CPU rehearsal ({DISTRIBUTED_CPU_ENV}=1): {gpus} processes over gloo, DDP"
    from forgellm.hardware.parallel_memory import choose_strategy

    choice = choose_strategy(
        _dims(config, model_dir), requested="auto", gpus=gpus, nodes=t.nodes,
        gpu_bytes=min(g.vram_total_bytes for g in hardware.gpus), offload=t.offload,
        method=t.method, seq_len=config.model.max_length, micro_batch=t.micro_batch_size,
        precision=hardware.preferred_precision if t.precision == "auto" else t.precision, lora_r=t.lora.r,
        lora_targets="all-linear" if t.lora.target_modules == "all-linear" else "attention",
        gradient_checkpointing=t.gradient_checkpointing,
    )  # fmt: skip
    return choice.strategy, choice.offload, choice.reason


def _dims(config: ForgeConfig, model_dir: Path | None):
    from forgellm.models.dims import dims_from_config

    if model_dir is None:
        raise ForgeError("The model folder is needed to size a multi-GPU run.", code=ErrorCode.CONFIG_INVALID)
    from transformers import AutoConfig

    return dims_from_config(AutoConfig.from_pretrained(str(model_dir)))


def _check_engine(strategy: str, method: str, device: str, offload: bool) -> None:
    """What the libraries under each strategy cannot do, refused before any process starts."""
    import torch.distributed as dist

    if device == "cuda" and not dist.is_nccl_available():
        raise ForgeError(
            "Training on several GPUs needs NCCL, and this torch build has no NCCL.",
            fix="Install a CUDA build of torch (pytorch.org's CUDA wheels include NCCL), or train on one GPU.",
            code=ErrorCode.DEPENDENCY_MISSING,
            data={"package": "torch (CUDA build with NCCL)"},
        )
    if device == "cpu" and not dist.is_gloo_available():
        raise ForgeError(
            "Rehearsing several processes on CPU needs torch's gloo backend, which this torch build lacks.",
            fix=f"Unset {DISTRIBUTED_CPU_ENV}, or install the standard torch wheel (it includes gloo).",
            code=ErrorCode.DEPENDENCY_MISSING,
            data={"package": "torch (with gloo)"},
        )
    if strategy == "deepspeed":
        if importlib.util.find_spec("deepspeed") is None:
            raise ForgeError(
                "training.distributed is deepspeed, but DeepSpeed is not installed.",
                fix="`pip install 'forgellm[deepspeed]'`, or use `--distributed fsdp` (sharding built into torch).",
                code=ErrorCode.DEPENDENCY_MISSING,
                data={"package": "deepspeed"},
            )
    if method == "qlora" and strategy in ("fsdp", "deepspeed"):
        raise ForgeError(
            f"QLoRA's 4-bit weights are not sharded by Forge's {strategy} yet.",
            fix="Use `--distributed ddp` (each GPU holds the 4-bit model), or LoRA with fsdp.",
            code=ErrorCode.CONFIG_INVALID,
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def worker_command(run_dir: Path, resume: Path | None, plan: ParallelPlan, options: LaunchOptions) -> list[str]:
    """The worker's command line: the module itself, or accelerate's launcher around it."""
    module = ["-m", "forgellm.training.worker", str(run_dir)] + (["--resume", str(resume)] if resume else [])
    if plan.strategy == "none":
        return [sys.executable, *module]
    address, port = main_endpoint(plan, options)
    if plan.world_size == 1 and plan.strategy != "deepspeed":  # accelerate refuses --multi_gpu with one
        # process; torchrun is what it would run. (DeepSpeed on one GPU: ZeRO-Offload, through accelerate.)
        return [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--nnodes", "1",
            "--master_addr", address, "--master_port", str(port), "--max_restarts", "0", *module,
        ]  # fmt: skip
    launcher = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--num_processes", str(plan.world_size), "--num_machines", str(plan.nodes),
        "--machine_rank", str(options.node_rank), "--main_process_ip", address, "--main_process_port", str(port),
        # Forge sets precision (autocast) and compiles nothing; the supervisor does the restarts.
        "--mixed_precision", "no", "--dynamo_backend", "no", "--max_restarts", "0", "--monitor_interval", "1",
    ]  # fmt: skip
    if plan.strategy == "deepspeed":
        # DeepSpeed's environment for the processes; its settings (ZeRO-3, offload, clipping, accumulation)
        # are made in the worker (deepspeed_group.py), which knows a resume's re-split accumulation. Each
        # machine runs its own launcher (torchrun), as for DDP/FSDP, not DeepSpeed's pdsh over ssh.
        return launcher + ["--use_deepspeed", "--zero3_init_flag", "false",
                           "--deepspeed_multinode_launcher", "standard"] + module  # fmt: skip
    return launcher + ["--multi_gpu"] + module


def main_endpoint(plan: ParallelPlan, options: LaunchOptions) -> tuple[str, int]:
    """Where the processes meet: this machine on a free port, or the main machine of a multi-node run."""
    if plan.nodes == 1:
        return "127.0.0.1", options.main_port or free_port()
    if not options.main_address:
        raise ForgeError(
            f"A run on {plan.nodes} machines needs the main machine's address.",
            fix="Run `forge train --node-rank 0 --main-address ADDRESS` on the main machine and "
            "`--node-rank N --main-address ADDRESS` on the others (ADDRESS: the main machine's IP).",
            code=ErrorCode.USAGE_INVALID,
        )
    if not 0 <= options.node_rank < plan.nodes:
        raise ForgeError(
            f"--node-rank {options.node_rank} is outside 0..{plan.nodes - 1} (training.nodes is {plan.nodes}).",
            fix=f"Give each machine its own rank from 0 to {plan.nodes - 1}.",
            code=ErrorCode.USAGE_INVALID,
        )
    return options.main_address, options.main_port or DEFAULT_MAIN_PORT


def wait_for_main(address: str, port: int, *, seconds: float | None = None) -> None:
    """A machine of rank > 0 waits until the main machine's launcher listens, or says why it cannot
    reach it (the launcher's own wait would sit silent for half an hour)."""
    limit = seconds if seconds is not None else float(os.environ.get(RENDEZVOUS_ENV) or RENDEZVOUS_SECONDS)
    deadline, last_error = time.monotonic() + limit, ""
    while True:
        try:
            with socket.create_connection((address, port), timeout=min(5.0, limit)):
                return
        except OSError as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise ForgeError(
                f"This machine cannot reach the main machine at {address}:{port} ({last_error}); waited {limit:g} s.",
                fix=f"Start `forge train --node-rank 0` on the main machine first; check that {address} is its "
                f"address as seen from here and that port {port} is open between the machines (firewall, "
                f"security group). {RENDEZVOUS_ENV} sets how long to wait.",
                code=ErrorCode.DISTRIBUTED_UNREACHABLE,
                data={"address": address, "port": port},
            )
        time.sleep(1.0)
