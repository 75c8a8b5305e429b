"""DeepSpeed ZeRO-3 behind the Group interface (parallel.py), through accelerate's DeepSpeed integration.

``forge train`` starts the processes with ``accelerate launch --use_deepspeed`` (launch.py); every
DeepSpeed setting is made here, in the worker, from forge.yaml: the worker is the one place that knows
the accumulation after a resume re-split it (loop.py), and ``zero_force_ds_cpu_optimizer`` has no
launcher flag.

How the loop's step maps onto DeepSpeed's engine:
- The engine owns the module and the optimizer: ``prepare`` hands both to ``accelerator.prepare``.
- ``accelerator``'s backward runs the engine's backward and, on the step's last micro-batch, the
  engine's step: clipping (``gradient_clipping``), the optimizer step and zero_grad. The loop's own
  ``optimizer.step`` / ``zero_grad`` are then accelerate's no-op wrappers; the scheduler still steps
  once per optimizer step, on the real optimizer's param_groups.
- DeepSpeed divides each micro-batch's loss by its accumulation steps and averages the gradients over
  the processes; the loop's loss is already a share of the step's sum over target tokens, so it is
  multiplied by both: the engine steps on the gradient one process would have.
- Checkpoints: the full weights are gathered on every process (rank 0 gets them), keyed as the model's
  own state_dict, so checkpoints are the files of every other strategy. The optimizer state is gathered
  by parameter name, full, as the other strategies save it: a run resumes under another number of
  processes or another strategy, and a run of another strategy resumes under DeepSpeed.
"""

from __future__ import annotations

from typing import Any

import torch

from forgellm.errors import ErrorCode, ForgeError
from forgellm.training.launch import ParallelPlan
from forgellm.training.parallel import COLLECTIVE_TIMEOUT, Group

ADAM_STATE = ("exp_avg", "exp_avg_sq")
HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay")


def deepspeed_config(*, micro_batch: int, accumulation: int, world: int, max_grad_norm: float, offload: bool,
                     on_gpu: bool) -> dict[str, Any]:  # fmt: skip
    """The DeepSpeed config of a run: ZeRO-3, fp32 partitions (Forge's autocast does mixed precision,
    as under DDP/FSDP), the optimizer in CPU RAM when offload is on."""
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": micro_batch * accumulation * world,
        "gradient_clipping": max_grad_norm,
        "zero_optimization": {
            "stage": 3,
            "offload_optimizer": {"device": "cpu" if offload else "none", "pin_memory": on_gpu},
            "offload_param": {"device": "none"},
            # accelerator.get_state_dict gathers the full weights only with this on (fp32 stays fp32).
            "stage3_gather_16bit_weights_on_model_save": True,
        },
        # With the optimizer offloaded, accelerate swaps torch's AdamW for DeepSpeedCPUAdam (same betas and
        # eps as Forge's AdamW; several times faster on a large model's CPU-side step), compiled on first
        # use. On GPUs that is worth it. The CPU rehearsal's models are tiny: torch's AdamW, no compiler.
        "zero_force_ds_cpu_optimizer": on_gpu,
        "bf16": {"enabled": False},
        "fp16": {"enabled": False},
        "steps_per_print": 2**31,
    }


class DeepSpeedGroup(Group):
    """One process of a ZeRO-3 group; the collectives (sum, any, barrier) are Group's, over the process
    group DeepSpeed set up."""

    accelerator: Any = None
    engine: Any = None

    def _connect(self, on_gpu: bool) -> None:
        from accelerate import PartialState

        # Without a GPU accelerate finds no device backend, lets DeepSpeed start gloo, then counts every
        # process as rank 0 of 1 (each would read rank 0's data and think it writes the checkpoints):
        # it must be told the backend. On GPUs its own choice (nccl) is right.
        state = PartialState(backend=None if on_gpu else "gloo", timeout=COLLECTIVE_TIMEOUT)
        if (state.process_index, state.num_processes) != (self.rank, self.world):
            raise ForgeError(
                f"accelerate sees this process as {state.process_index} of {state.num_processes}, the launcher "
                f"started it as {self.rank} of {self.world} (backend {state.backend}).",
                fix="Use `--distributed fsdp`, or the accelerate and DeepSpeed versions in Forge's constraints.txt.",
                code=ErrorCode.DEPENDENCY_MISSING,
                data={"package": "accelerate / deepspeed"},
            )

    def prepare(
        self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, *, accumulation: int, training: Any,
        precision: str,
    ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        if precision == "fp16":
            raise ForgeError(
                "Forge's DeepSpeed training does not run in fp16 (its loss scaling is not wired in).",
                fix="Set training.precision to bf16 (GPUs from Ampere on) or fp32, or use `--distributed fsdp`.",
                code=ErrorCode.CONFIG_INVALID,
            )
        from accelerate import Accelerator
        from accelerate.utils import DeepSpeedPlugin

        self.accumulation = accumulation
        config = deepspeed_config(
            micro_batch=training.micro_batch_size, accumulation=accumulation, world=self.world,
            max_grad_norm=training.max_grad_norm, offload=self.plan.offload, on_gpu=self.device.type == "cuda",
        )  # fmt: skip
        # zero3_init_flag off: the model is loaded whole (and resumed weights put in) before the engine
        # partitions it, as the other strategies load it.
        plugin = DeepSpeedPlugin(hf_ds_config=config, zero3_init_flag=False)
        self.accelerator = Accelerator(deepspeed_plugin=plugin, gradient_accumulation_steps=accumulation)
        self.engine, wrapped = self.accelerator.prepare(module, optimizer)
        return self.engine, wrapped

    def backward(self, loss: torch.Tensor, scaler: Any, last: bool) -> None:
        # The engine divides by its accumulation steps and averages over processes; the step needs the sum.
        scaled = loss * (self.world * self.accumulation)
        self.accelerator.deepspeed_engine_wrapped.backward(scaled, sync_gradients=last)

    def clip_gradients(self, module: torch.nn.Module, max_norm: float) -> float:
        """The engine clipped inside backward; its norm of the step before clipping."""
        norm = self.engine.get_global_grad_norm()
        return float("nan") if norm is None else float(norm)

    def hookable_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        return self.engine.optimizer.optimizer  # inside ZeRO's optimizer: the one whose step runs

    # ----- state ---------------------------------------------------------------------------------
    def model_state(self, module: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        state = self.accelerator.get_state_dict(module)  # a collective; None on processes other than 0
        return None if state is None else {key.removeprefix("model."): value for key, value in state.items()}

    def _trainable(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(name, p) for name, p in self.engine.module.named_parameters() if p.requires_grad]

    def optimizer_state(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The Adam state by parameter name, full on rank 0, as torch's get_optimizer_state_dict gives it
        for the other strategies (every process takes part: each parameter's state is gathered)."""
        from deepspeed.utils import safe_get_full_optimizer_state

        inner = self.engine.optimizer.optimizer
        step = next((s["step"] for s in inner.state.values() if "step" in s), None)
        state: dict[str, Any] = {}
        for name, param in self._trainable() if step is not None else ():
            values = {key: safe_get_full_optimizer_state(param, key) for key in ADAM_STATE}
            if self.is_main:
                state[name] = {key: value.detach().cpu().clone() for key, value in values.items()}
                state[name]["step"] = torch.tensor(float(step))
        hyper = {key: value for key, value in inner.param_groups[0].items() if key in HYPERPARAMETERS}
        return {"state": state, "param_groups": [{**hyper, "params": [name for name, _ in self._trainable()]}]}

    def load_optimizer_state(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """A by-name state (of any strategy and process count) into ZeRO's partitions: every process keeps
        its slice of each parameter's full state."""
        from deepspeed.utils import safe_set_full_optimizer_state

        saved, zero = state["state"], self.engine.optimizer
        inner = zero.optimizer
        trainable = self._trainable()
        missing = [name for name, _ in trainable if name not in saved]
        if saved and missing:
            raise ForgeError(
                f"The checkpoint's optimizer state does not match this model ({len(missing)} parameters missing, "
                f"e.g. {missing[0]}).",
                fix="Resume with the forge.yaml the run was trained with, or start a new run.",
                code=ErrorCode.RUN_NOT_RESUMABLE,
            )
        if not saved:
            return
        step = float(next(iter(saved.values()))["step"])
        # Adam creates its state at its first step; ZeRO's slices must exist before they are written.
        for flat in zero.fp32_partitioned_groups_flat:
            inner.state[flat] = {
                "step": torch.tensor(step) if isinstance(inner, torch.optim.AdamW) else int(step),
                **{key: torch.zeros_like(flat) for key in ADAM_STATE},
            }
        for name, param in trainable:
            for key in ADAM_STATE:
                safe_set_full_optimizer_state(param, saved[name][key].to(torch.float32), key)
        for group in inner.param_groups:
            group.update({k: v for k, v in state["param_groups"][0].items() if k in HYPERPARAMETERS})


def make_group(plan: ParallelPlan) -> Group:
    """This process's group: DeepSpeed's engine (here; DeepSpeed itself is imported only when used) or torch's."""
    if plan.strategy == "deepspeed":
        return DeepSpeedGroup(plan)
    return Group(plan)
