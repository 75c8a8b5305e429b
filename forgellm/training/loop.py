"""The training loop of the worker: optimizer steps, evaluation, best/early stopping, checkpoints.

``train(run_dir, resume, emit)`` reads the run folder the supervisor wrote (protocol.py), trains,
reports every step as an event through ``emit`` and returns the ExitCode the supervisor acts on.
The loss of an optimizer step is the mean over every target token of its micro-batches, so the
same examples give the same update whatever the micro-batch size and whether rows are packed.
"""

from __future__ import annotations

import math
import random
import resource
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from forgellm.config.io import load_config
from forgellm.errors import ErrorCode, ForgeError
from forgellm.project.layout import RunLayout
from forgellm.project.run_record import RunSpec
from forgellm.training import checkpoint as ckpt
from forgellm.training.data import (
    DataPosition,
    MicroBatches,
    evaluation_batches,
    fit_splits_to_length,
    load_training_data,
)
from forgellm.training.deepspeed_group import make_group
from forgellm.training.failures import crashed, fail, is_cpu_out_of_memory, out_of_memory
from forgellm.training.launch import ParallelPlan
from forgellm.training.model import TrainableModel, load_trainable_model, load_weights, save_weights
from forgellm.training.objective import forward_module
from forgellm.training.packing import Batch
from forgellm.training.parallel import split_for_rank
from forgellm.training.protocol import ExitCode, event

Emit = Callable[[str], None]


class NonFiniteError(RuntimeError):
    """The loss or the gradient norm of a step is NaN or infinite."""


class FaultHooks(Protocol):
    """Injected failures (see worker.py); the loop calls them at the places the real failures happen:
    ``fire`` at a point of a step (step, forward, optimizer, eval, checkpoint), ``gradient`` from a
    gradient hook inside backward, ``loss`` on each micro-batch's loss."""

    def fire(self, point: str, step: int) -> None: ...
    def gradient(self, step: int, grad: torch.Tensor) -> torch.Tensor: ...
    def loss(self, step: int, loss: torch.Tensor) -> torch.Tensor: ...


def train(
    run_dir: Path,
    resume: Path | None,
    emit: Emit,
    *,
    faults: FaultHooks | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> ExitCode:
    """Train the run in ``run_dir`` (from ``resume`` when given); every outcome is an event and an ExitCode."""
    loop: TrainingLoop | None = None
    try:
        loop = TrainingLoop(Path(run_dir), emit, faults, should_stop)
        loop.setup(resume)
        code = loop.run()
        loop.group.close()  # only after a clean end: a failed collective cannot be torn down in order
        return code
    except ForgeError as exc:
        return fail(emit, loop, "config", exc, ExitCode.CONFIG, with_trace=False)
    except NonFiniteError as exc:
        error = ForgeError(str(exc), code=ErrorCode.TRAIN_NON_FINITE)
        return fail(emit, loop, "nan", error, ExitCode.NAN, with_trace=False)
    except (torch.OutOfMemoryError, MemoryError) as exc:
        return fail(emit, loop, "oom", out_of_memory(exc, loop), ExitCode.OOM)
    except RuntimeError as exc:
        if is_cpu_out_of_memory(exc):
            return fail(emit, loop, "oom", out_of_memory(exc, loop), ExitCode.OOM)
        return fail(emit, loop, "crash", crashed(exc), ExitCode.FAILED)
    except Exception as exc:
        return fail(emit, loop, "crash", crashed(exc), ExitCode.FAILED)


class TrainingLoop:
    def __init__(self, run_dir: Path, emit: Emit, faults: FaultHooks | None, should_stop: Callable[[], bool]):
        self.run_dir, self.emit, self.faults, self.should_stop = run_dir, emit, faults, should_stop
        self.spec = RunSpec.load(run_dir)
        # The snapshot already holds every override; FORGE_* variables must not change it again.
        self.config = load_config(RunLayout(run_dir).config, environ={}).config
        self.settings = self.config.training
        self.progress = ckpt.Progress()
        self.started = False
        self.step_seconds: list[float] = []
        self.created_at = time.perf_counter()  # the time budget counts loading too
        self.setup_seconds = 0.0
        self.heartbeat = RunLayout(run_dir).heartbeat
        self._last_beat = -math.inf
        self.group = make_group(ParallelPlan.load(run_dir))
        self.accumulation = self.settings.gradient_accumulation  # per process; a resume may re-split it

    # ----- setup -----------------------------------------------------------------------------------
    def setup(self, resume: Path | None) -> None:
        t, group = self.settings, self.group
        _seed_everything(t.seed)
        # A sharded model is loaded into RAM and each process moves only its shard to its GPU.
        load_on = torch.device("cpu") if group.strategy == "fsdp" else None
        self.model: TrainableModel = load_trainable_model(
            Path(self.spec.model_dir), t, model_key=self.config.model.ref, device=group.device, load_on=load_on
        )
        for message in self.model.warnings:
            self.warn("other", message)
        vocab = self.model.model.get_input_embeddings().num_embeddings
        prepared = Path(self.spec.prepared_dir)
        splits = load_training_data(prepared, self.spec.tokenizer_id, vocab)
        # After healing shortened max_length, the examples prepared longer must really be cut.
        self.train_split, val_split, self.length_cut = fit_splits_to_length(
            prepared, splits, self.config.model.max_length, cpt=t.stage == "cpt"
        )
        self.val_split = val_split.subset(t.eval_max_examples, seed=t.seed)
        tokenizer = self.model.tokenizer
        self.pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
        self.batches = MicroBatches(
            self.train_split, seed=t.seed, max_length=self.config.model.max_length,
            micro_batch_size=t.micro_batch_size, packing=t.packing, pad_id=self.pad_id,
            mask_dtype=self.model.mask_dtype(),
        )
        # Weights of a resumed run go into the whole model, before it is wrapped or sharded.
        warn = lambda message: self.warn("other", message)  # noqa: E731
        resumed_from = ckpt.load_checkpoint(resume, self._restore_weights, warn) if resume else None
        self.loss_module = group.wrap(self.model.model)
        self.optimizer = torch.optim.AdamW(
            [p for p in self.loss_module.parameters() if p.requires_grad], lr=t.learning_rate, weight_decay=0.0
        )
        if resumed_from is not None:
            self._fit_accumulation(self._resume_state)
        self.loss_module, self.optimizer = group.prepare(  # DeepSpeed's engine takes both (deepspeed_group.py)
            self.loss_module, self.optimizer, accumulation=self.accumulation, training=t, precision=self.model.precision
        )  # fmt: skip
        steps_per_epoch = max(1, math.ceil(self.batches.batches_per_epoch() / self.micro_batches_per_step))
        self.total_steps = t.max_steps or max(1, math.ceil(t.epochs * steps_per_epoch))
        from transformers import get_scheduler

        self.scheduler = get_scheduler(
            t.lr_scheduler, self.optimizer,
            num_warmup_steps=int(t.warmup_ratio * self.total_steps), num_training_steps=self.total_steps,
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.model.precision == "fp16" else None
        if resumed_from is not None:
            self._restore_state(self._resume_state)
        group.require_same_start(self.progress.step)
        self._install_fault_hooks()
        self.started = True
        self.setup_seconds = time.perf_counter() - self.created_at
        self._emit_start(resumed_from)
        if self.length_cut is not None:
            self.emit(event("warning", kind="max_length", message=self.length_cut.message(),
                            step=self.progress.step, cut=self.length_cut.to_dict()))

    def _emit_start(self, resumed_from: Path | None) -> None:
        t, m = self.settings, self.model
        self.emit(event(
            "start", step=self.progress.step, total_steps=self.total_steps,
            epochs=None if t.max_steps else t.epochs,
            device=str(m.device), precision=m.precision, method=t.method, stage=t.stage, packing=t.packing,
            trainable_params=m.trainable_params, total_params=m.total_params,
            train_examples=len(self.train_split), val_examples=len(self.val_split),
            tokens_per_epoch=self.train_split.tokens, max_length=self.config.model.max_length,
            micro_batch_size=t.micro_batch_size,
            gradient_accumulation=self.accumulation, learning_rate=t.learning_rate,
            resumed_from=str(resumed_from) if resumed_from else None,
            distributed=self.group.strategy, world_size=self.group.world,
        ))

    @property
    def micro_batches_per_step(self) -> int:
        """Micro-batches of one optimizer step over all processes."""
        return self.accumulation * self.group.world

    def _restore_weights(self, folder: Path, state: dict[str, Any]) -> None:
        load_weights(self.model, folder)
        self._resume_state = state

    def _fit_accumulation(self, state: dict[str, Any]) -> None:
        """A run resumed on another number of processes keeps its examples per step: the accumulation
        per process is re-split, or the resume is refused when the count does not divide."""
        before, world = state.get("world_size", 1), self.group.world
        per_step = state.get("micro_batches_per_step", self.settings.gradient_accumulation * before)
        if before == world:
            return
        if per_step % world:
            raise ForgeError(
                f"This run's optimizer steps take {per_step} micro-batches, which {world} processes cannot "
                f"share evenly (it was trained on {before}).",
                fix="Resume with a number of GPUs that divides it: "
                + ", ".join(f"--gpus {n}" for n in range(1, per_step + 1) if per_step % n == 0) + ".",
                code=ErrorCode.USAGE_INVALID,
            )
        self.accumulation = per_step // world
        self.warn("other", f"Resumed on {world} process(es) after {before}: each now accumulates "
                  f"{self.accumulation} micro-batch(es) per step, so a step still takes {per_step}.")

    def _restore_state(self, state: dict[str, Any]) -> None:
        if state.get("optimizer_format") == "by_name":
            self.group.load_optimizer_state(self.loss_module, self.optimizer, state["optimizer"])
        else:  # a checkpoint of a Forge before parallel training: indexed by parameter order
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        ckpt.restore_rng(state["rng"])
        self.progress = ckpt.Progress.from_dict(state["progress"])

    def _install_fault_hooks(self) -> None:
        """Hooks in the places the real failures happen: the forward pass, the backward pass (the
        gradient of the first trainable weight, computed mid-backward) and inside optimizer.step."""
        faults = self.faults
        if faults is None:
            return

        def forward(module, args) -> None:
            if module.training:
                faults.fire("forward", self.progress.step + 1)

        forward_module(self.model.model).register_forward_pre_hook(forward)
        first = next(p for p in self.model.model.parameters() if p.requires_grad)
        first.register_hook(lambda grad: faults.gradient(self.progress.step + 1, grad))
        self.group.hookable_optimizer(self.optimizer).register_step_pre_hook(
            lambda *args: faults.fire("optimizer", self.progress.step + 1))

    # ----- the loop --------------------------------------------------------------------------------
    def run(self) -> ExitCode:
        stream = self.batches.stream(self.progress.position)
        last_saved = None
        while self.progress.step < self.total_steps:
            before = self.progress.position
            iteration_started = time.perf_counter()
            self.optimizer_step(stream)
            if self.group.any(self.should_stop()):  # a signal reaches the processes at different steps
                self.save("signal")
                self.end("interrupted")
                return ExitCode.INTERRUPTED
            epoch_ended = self._epoch_ended(before, self.progress.position)
            stop_reason = self._maybe_evaluate(epoch_ended)
            if self._save_due(epoch_ended):
                last_saved = self.save("interval")
            # The run's time: steps, evaluations and checkpoints (what the time budget bounds).
            self.progress.seconds += time.perf_counter() - iteration_started
            if stop_reason is None and self._over_time_budget():
                stop_reason = "time_budget"
                self._evaluate_last_step()  # the steps since the last evaluation may hold the best weights
            if stop_reason:
                if last_saved != self.progress.step:
                    self.save("end")
                self.end(stop_reason)
                return ExitCode.OK
        self._evaluate_last_step()
        if last_saved != self.progress.step:
            self.save("end")
        self.end("max_steps" if self.settings.max_steps else "completed")
        return ExitCode.OK

    def optimizer_step(self, stream: Iterator[tuple[Batch, DataPosition]]) -> None:
        step = self.progress.step + 1
        if self.faults is not None:
            self.faults.fire("step", step)
        started = time.perf_counter()
        group = self.group
        micro = [next(stream) for _ in range(self.micro_batches_per_step)]
        targets = max(1, sum(b.target_tokens for b, _ in micro))  # of the whole step, on every process
        self.loss_module.train()
        mine = split_for_rank(micro, group.rank, group.world)
        loss_sum = 0.0
        for index, (batch, _) in enumerate(mine):
            self.beat()
            with group.accumulating(self.loss_module, last=(last := index == len(mine) - 1)):
                loss = self._forward(batch.to(self.model.device), targets)
                if self.faults is not None:
                    loss = self.faults.loss(step, loss)
                if group.any(not torch.isfinite(loss)):  # every process skips the step together
                    value = loss.item() if not torch.isfinite(loss) else "not finite in another process"
                    raise NonFiniteError(f"The loss of step {step} is {value}; the step was not applied.")
                group.backward(loss, self.scaler, last)
            loss_sum += loss.item()
        loss_sum = group.sum(loss_sum)[0]
        grad_norm = self._apply_gradients(step)
        self.progress.step, self.progress.position = step, micro[-1][1]
        seconds = time.perf_counter() - started
        self.progress.train_losses.append(loss_sum)
        self.step_seconds.append(seconds)
        self._emit_step(loss_sum, grad_norm, [b for b, _ in micro], seconds)

    def _forward(self, batch: Batch, targets: int) -> torch.Tensor:
        with self.model.autocast():
            return self.loss_module(batch, targets)

    def _apply_gradients(self, step: int) -> float:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        # The same on every process: they agree on a NaN. (DeepSpeed stepped in backward; step/zero_grad: no-ops)
        grad_norm = self.group.clip_gradients(self.loss_module, self.settings.max_grad_norm)
        if not math.isfinite(grad_norm) and self.scaler is None:
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteError(f"The gradient norm of step {step} is {grad_norm}; the step was not applied.")
        if self.scaler is not None:  # fp16: the scaler skips steps with inf gradients and lowers its scale
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _emit_step(self, loss: float, grad_norm: float, batches: list[Batch], seconds: float) -> None:
        real = sum(b.real_tokens for b in batches)
        recent = self.step_seconds[-20:]
        position = self.progress.position
        self.emit(event(
            "step", step=self.progress.step, epoch=round(position.epoch + position.index / len(self.train_split), 4),
            loss=loss, lr=self.scheduler.get_last_lr()[0], grad_norm=grad_norm if math.isfinite(grad_norm) else None,
            tokens=sum(b.tokens for b in batches), real_tokens=real, tokens_per_s=real / seconds if seconds else None,
            memory_bytes=peak_memory_bytes(self.model.device),
            eta_s=(self.total_steps - self.progress.step) * sum(recent) / len(recent),
        ))

    def _epoch_ended(self, before: DataPosition, after: DataPosition) -> bool:
        return after.epoch > before.epoch or after.index >= len(self.train_split)

    def _save_due(self, epoch_ended: bool) -> bool:
        every = self.settings.save_every_steps
        return self.progress.step % every == 0 if every else epoch_ended

    def _over_time_budget(self) -> bool:
        budget = self.settings.time_budget_minutes
        # The processes' clocks differ a little: one of them over the budget stops them all.
        if budget is None or not self.group.any(self.progress.seconds + self.setup_seconds >= budget * 60):
            return False
        self.warn("time_budget", f"The time budget of {budget:g} minutes is used up; stopping after an evaluation "
                  "and a checkpoint.")
        return True

    # ----- evaluation ------------------------------------------------------------------------------
    def _evaluate_last_step(self) -> None:
        if not self.progress.val_losses or self.progress.val_losses[-1][0] != self.progress.step:
            self.evaluate()

    def _maybe_evaluate(self, epoch_ended: bool) -> str | None:
        every = self.settings.eval_every_steps
        if not (self.progress.step % every == 0 if every else epoch_ended):
            return None
        return self.evaluate()

    def evaluate(self) -> str | None:
        """Validation loss, best tracking; returns a stop reason (early_stopping | overfitting) or None."""
        val_loss = self.validation_loss()
        if val_loss is None:
            return None
        p, stopping = self.progress, self.settings.early_stopping
        improved = p.best_val_loss is None or val_loss < p.best_val_loss - stopping.min_delta
        if improved:
            p.best_val_loss, p.best_step, p.evals_without_improvement = val_loss, p.step, 0
            self._save_best()
        else:
            p.evals_without_improvement += 1
        p.val_losses.append((p.step, val_loss))
        self.emit(event("eval", step=p.step, val_loss=val_loss, best_val_loss=p.best_val_loss,
                        improved=improved, train_loss=self._recent_train_loss()))
        if self._overfitting(val_loss) and self.settings.stop_on_overfitting:
            return "overfitting"
        if stopping.enabled and p.evals_without_improvement >= stopping.patience:
            return "early_stopping"
        return None

    def validation_loss(self) -> float | None:
        if len(self.val_split) == 0:
            return None
        group = self.group
        self.loss_module.eval()
        total, count, computed, seen, first = 0.0, 0, 0, 0, None
        with torch.no_grad():
            for index, batch in enumerate(evaluation_batches(
                self.val_split, max_length=self.config.model.max_length,
                micro_batch_size=self.settings.micro_batch_size, packing=self.settings.packing,
                pad_id=self.pad_id, mask_dtype=self.model.mask_dtype(),
            )):  # fmt: skip
                seen, first = index + 1, batch if first is None else first
                if index % group.world != group.rank:  # split_for_rank's rule, on a stream
                    continue
                self.beat()
                if self.faults is not None:
                    self.faults.fire("eval", self.progress.step)
                computed += 1
                if batch.target_tokens:
                    loss = self._forward(batch.to(self.model.device), batch.target_tokens)
                    total, count = total + loss.item() * batch.target_tokens, count + batch.target_tokens
            # A sharded model gathers its weights in every forward, so each process runs as many.
            for _ in range(-(-seen // group.world) - computed if group.distributed and first else 0):
                self._forward(first.to(self.model.device), max(1, first.target_tokens))
        self.loss_module.train()
        total, count = group.sum(total, count)
        return total / count if count else None

    def _recent_train_loss(self) -> float | None:
        recent = self.progress.train_losses[-10:]
        return sum(recent) / len(recent) if recent else None

    def _overfitting(self, val_loss: float) -> bool:
        """Validation loss well above its best while training loss still falls."""
        p = self.progress
        if p.best_val_loss is None or p.best_step is None or val_loss <= p.best_val_loss * (
            1 + self.settings.overfitting_threshold
        ):
            return False
        at_best = p.train_losses[max(0, p.best_step - 10) : p.best_step]
        now = self._recent_train_loss()
        if not at_best or now is None or now >= sum(at_best) / len(at_best):
            return False
        if not p.overfitting_warned or self.settings.stop_on_overfitting:
            self.warn("overfitting", f"Validation loss {val_loss:.4f} is more than "
                      f"{self.settings.overfitting_threshold:.0%} above its best ({p.best_val_loss:.4f}, step "
                      f"{p.best_step}) while training loss still falls: the model memorises the training data.")
            p.overfitting_warned = True
        return True

    # ----- saving and ending -----------------------------------------------------------------------
    def _save_best(self) -> None:
        import json

        weights = self.group.model_state(self.loss_module)  # every process takes part; rank 0 writes

        def write(folder: Path) -> None:
            save_weights(self.model, folder, state=weights)
            info = {"step": self.progress.step, "val_loss": self.progress.best_val_loss, "method": self.model.method}
            (folder / "best.json").write_text(json.dumps(info, indent=2), encoding="utf-8")

        if self.group.is_main:
            path = ckpt.save_best(self.run_dir, write)
            self.emit(event("checkpoint", step=self.progress.step, path=str(path), reason="best"))
        self.group.barrier()

    def save(self, reason: str) -> int:
        self.beat()
        weights = self.group.model_state(self.loss_module)
        state = {
            "progress": self.progress.to_dict(),
            "optimizer": self.group.optimizer_state(self.loss_module, self.optimizer),
            "optimizer_format": "by_name",  # parameter names: loadable under any number of processes
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": ckpt.capture_rng(),
            "world_size": self.group.world,
            "micro_batches_per_step": self.micro_batches_per_step,
        }

        def write_weights(folder: Path) -> None:
            save_weights(self.model, folder, state=weights)
            if self.faults is not None:  # half a checkpoint on disk: the weights, not yet the trainer state
                self.faults.fire("checkpoint", self.progress.step)

        if self.group.is_main:  # one checkpoint set, however many processes
            path = ckpt.save_checkpoint(
                self.run_dir, self.progress.step, write_weights, state, self.settings.keep_checkpoints
            )
            self.emit(event("checkpoint", step=self.progress.step, path=str(path), reason=reason))
        self.group.barrier()
        self.beat()
        return self.progress.step

    def end(self, reason: str) -> None:
        p = self.progress
        self.emit(event("end", step=p.step, reason=reason, best_val_loss=p.best_val_loss, best_step=p.best_step,
                        final_train_loss=self._recent_train_loss(), seconds=round(p.seconds, 3)))

    def beat(self) -> None:
        """Refresh the heartbeat the supervisor's watchdog reads (protocol.py). Called from the loop
        itself, never from a thread of its own: a step that hangs stops the heartbeat with it."""
        now = time.monotonic()
        if now - self._last_beat >= 1.0:  # at most once a second: one utime call
            self.heartbeat.touch()
            self._last_beat = now

    def warn(self, kind: str, message: str) -> None:
        self.emit(event("warning", kind=kind, message=message, step=self.progress.step))


def peak_memory_bytes(device) -> int:
    """Peak GPU memory allocated by torch, or the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
