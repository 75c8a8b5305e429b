"""One training process among several: data parallel (DDP) or sharded (FSDP2), on torch's own engines
(DeepSpeed ZeRO-3 behind the same interface: deepspeed_group.py).

``forge train`` starts one process per GPU through ``accelerate launch`` (launch.py), which runs
torchrun: every process finds its RANK, WORLD_SIZE and LOCAL_RANK in its environment and the
strategy in the run folder's parallel.json. A single process (strategy none) goes through the same
code with a group of one, so there is one training loop.

How the work is split, so that N processes give the step one process would:
- An optimizer step takes ``gradient_accumulation × world_size`` micro-batches from the one data
  stream every process reads (its order depends on the seed only); process r computes micro-batches
  r, r + N, r + 2N ... Every process counts the target tokens of all of them, so each micro-batch's
  loss is divided by the step's token count, exactly as in one process.
- DDP and FSDP average the gradients over the processes; the loss is multiplied by N before backward,
  so the sum, which one process would have, is what the optimizer gets (torch's
  DistributedDataParallel and ``fully_shard`` are what accelerate itself prepares; accelerate's
  ``Accelerator`` is not used for them because it refuses FSDP without a GPU, where these tests run).
- The model is called through ``LossModule`` so DDP's and FSDP's own forward hooks run: the loss
  path of objective.py calls the decoder directly, which would bypass a wrapper around the model.
- Checkpoints: every process takes part in gathering the full state (FSDP), only rank 0 writes. The
  optimizer state is saved by parameter name, full (not sharded), so a run resumes under another
  number of processes or another strategy.
"""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from typing import Any

import torch

from forgellm.errors import ErrorCode, ForgeError
from forgellm.training.launch import ParallelPlan
from forgellm.training.objective import batch_loss

# How long a collective may wait for the other processes before the group gives up; a rank that died
# is noticed by the launcher long before, a rank that hangs by the supervisor's watchdog.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


class LossModule(torch.nn.Module):
    """The model behind the training loss: what DDP / FSDP wrap, so their hooks see every forward."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any, num_items: int) -> torch.Tensor:
        return batch_loss(self.model, batch, num_items)


def rank_of(environ: dict[str, str] | None = None) -> int:
    return int((environ if environ is not None else os.environ).get("RANK", "0"))


class Group:
    """This process's place in the group, and the few collectives the loop needs."""

    def __init__(self, plan: ParallelPlan) -> None:
        self.plan = plan
        self.strategy = plan.strategy
        self.rank = rank_of()
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.strategy != "none" and self.world != plan.world_size:
            raise ForgeError(
                f"This process was started as one of {self.world}, but the run asks for {plan.world_size} "
                f"({plan.gpus} GPU(s) × {plan.nodes} machine(s)).",
                fix="Start training with `forge train`, which launches every process itself.",
                code=ErrorCode.USAGE_INVALID,
            )
        on_gpu = plan.device == "cuda" and torch.cuda.is_available()
        self.device = torch.device("cuda", self.local_rank) if on_gpu else torch.device("cpu")
        if on_gpu:
            torch.cuda.set_device(self.device)
        if self.strategy != "none" and not torch.distributed.is_initialized():
            self._connect(on_gpu)

    def _connect(self, on_gpu: bool) -> None:
        torch.distributed.init_process_group(backend="nccl" if on_gpu else "gloo", timeout=COLLECTIVE_TIMEOUT)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    # ----- wrapping ------------------------------------------------------------------------------
    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the loop calls for a loss: LossModule(model), wrapped for the strategy."""
        module = LossModule(model)
        if self.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            return DistributedDataParallel(module, device_ids=ids)
        if self.strategy == "fsdp":
            return self._shard(module, model)
        return module

    def _shard(self, module: LossModule, model: torch.nn.Module) -> torch.nn.Module:
        """FSDP2: each decoder layer its own unit (its weights gathered only while it computes), the
        embeddings, final norm and head in the root unit: the wrapping accelerate's
        TRANSFORMER_BASED_WRAP does, from the model's own ``_no_split_modules``."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

        mesh = init_device_mesh(self.device.type, (self.world,))
        options: dict[str, Any] = {"mesh": mesh}
        if self.plan.offload and self.device.type == "cuda":  # on a CPU the shards are in RAM already
            options["offload_policy"] = CPUOffloadPolicy()
        layer_names = set(getattr(_transformers_model(model), "_no_split_modules", None) or ())
        layers = [m for m in model.modules() if type(m).__name__ in layer_names]
        if not layers:
            raise ForgeError(
                f"training.distributed is fsdp, but the model ({type(model).__name__}) names no decoder layer "
                "class to shard by (_no_split_modules).",
                fix="Use `--distributed ddp` for this model.",
                code=ErrorCode.CONFIG_INVALID,
            )
        for layer in layers:
            fully_shard(layer, **options)
        fully_shard(module, **options)
        return module

    def prepare(
        self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, *, accumulation: int, training: Any,
        precision: str,
    ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """The module and optimizer the loop trains with, once the optimizer exists (an engine that owns
        both, DeepSpeed's, takes them here); torch's engines wrapped the module already."""
        return module, optimizer

    def accumulating(self, module: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """Gradients of micro-batches before the step's last stay local; the last one synchronises."""
        if self.strategy == "ddp" and not last:
            return module.no_sync()  # type: ignore[operator]
        if self.strategy == "fsdp":
            module.set_requires_gradient_sync(last)  # type: ignore[operator]
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, scaler: Any, last: bool) -> None:
        """Backward of one micro-batch's loss (already divided by the step's target tokens)."""
        scaled = loss * self.world  # DDP and FSDP average gradients over the processes; the step needs their sum
        (scaler.scale(scaled) if scaler else scaled).backward()

    def clip_gradients(self, module: torch.nn.Module, max_norm: float) -> float:
        """Clip the step's gradients; their total norm before clipping, the same on every process (under
        FSDP clip_grad_norm_'s total is a DTensor whose full value is the group's norm)."""
        parameters = [p for p in module.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def hookable_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """The torch optimizer whose step() really runs (where an injected fault fires)."""
        return optimizer

    # ----- collectives ---------------------------------------------------------------------------
    def sum(self, *values: float) -> list[float]:
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self._collective_device)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def any(self, flag: bool) -> bool:
        """Whether any process says yes (a stop request, a non-finite loss): all then act together."""
        return bool(self.sum(1.0 if flag else 0.0)[0]) if self.distributed else flag

    def require_same_start(self, step: int) -> None:
        """Every process resumes at the same step, or none starts: on several machines each one reads the
        checkpoints of its own project copy, which may differ."""
        if not self.distributed:
            return
        both = torch.tensor([step, -step], dtype=torch.float64, device=self._collective_device)
        torch.distributed.all_reduce(both, op=torch.distributed.ReduceOp.MAX)  # max and -min
        if float(both[0]) != -float(both[1]):
            raise ForgeError(
                "The processes of this run start from different checkpoints: on several machines each one "
                "resumes from the checkpoints in its own copy of the project, and they differ.",
                fix="Copy the main machine's runs/<id>/ folder to the other machines, then resume.",
                code=ErrorCode.CONFIG_INVALID,
            )

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    @property
    def _collective_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    # ----- state ---------------------------------------------------------------------------------
    def model_state(self, module: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """The full weights of a sharded model (every process takes part, rank 0 gets them, keyed as
        the unwrapped model's state_dict); None when the model is whole on every process."""
        if self.strategy != "fsdp":
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {key.removeprefix("model."): value for key, value in state.items()}

    def load_model_state(self, module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Full weights (keyed as the unwrapped model's state_dict) into a sharded model."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        prefixed = {f"model.{key}": value for key, value in state.items()}
        set_model_state_dict(module, prefixed, options=StateDictOptions(full_state_dict=True, strict=False))

    def optimizer_state(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The optimizer's state keyed by parameter name, full on rank 0 (a collective under FSDP)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        full = self.strategy == "fsdp"
        options = StateDictOptions(full_state_dict=full, cpu_offload=full)
        return get_optimizer_state_dict(module, optimizer, options=options)

    def load_optimizer_state(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        options = StateDictOptions(full_state_dict=self.strategy == "fsdp")
        set_optimizer_state_dict(module, optimizer, state, options=options)

    def close(self) -> None:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _transformers_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a peft wrapper, or the model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def split_for_rank(items: list[Any], rank: int, world: int) -> list[Any]:
    """The items process ``rank`` of ``world`` computes: rank, rank + world, ... (the one rule of who
    takes which micro-batch)."""
    return items[rank::world]
