"""The schedule of a plan: how long it trains, from a measured throughput and the time budget.

On a CPU-only machine (or with training.time_budget_minutes) the budget becomes optimizer steps: the
measured tokens/s of the planned shape (planning/calibration.py) give the time of a step; start-up and
evaluations are taken off first. Evaluations are rationed (a subset of the val split, fewer of them)
so the budget goes to training. When the budget holds only a few big steps, gradient accumulation is
lowered: the same examples in more, smaller steps move a model further. A learning rate that cannot
move the model in the planned steps is raised here, where the steps are known; a budget that cannot
hold one step is refused with the step's duration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from forgellm.advisor import rules_plan
from forgellm.errors import ErrorCode, ForgeError
from forgellm.hardware.precision import PrecisionDecision
from forgellm.hardware.probe import HardwareInfo
from forgellm.planning.estimate import (
    STARTUP_SECONDS,
    TimeEstimate,
    estimate_time,
    human_duration,
    seconds_per_step,
    steps_within,
)
from forgellm.planning.guards import CheckedPlan, Correction
from forgellm.planning.hyperparams import evaluations_for
from forgellm.planning.profile import DataProfile

DEFAULT_CPU_BUDGET_MINUTES = 30.0
# A run bounded by its time budget makes at least this many optimizer steps when a smaller gradient
# accumulation allows it: LoRA moves about one learning rate per step, so a handful of big steps
# barely moves a model (SmolLM2 demo before: 16 steps of 16 examples, -12% test loss; with 65 steps of
# 4 in less time, -33%, together with the faster precision and loss).
MIN_BUDGET_STEPS = 48
EVAL_SHARE = 0.15  # evaluations during training take at most this share of a time budget
EVAL_ONE_SHARE = 0.05  # ... and one evaluation at most this share: a subset of the val split if needed
MIN_EVAL_EXAMPLES = 64  # fewer would make the best-checkpoint choice a coin toss


@dataclass(frozen=True)
class Schedule:
    time: TimeEstimate | None
    max_steps: int | None
    budget_minutes: float | None
    notes: list[str]
    warnings: list[str]
    evaluations: int | None = None  # how many times the run evaluates (None: the default cadence)
    eval_max_examples: int | None = None  # validation examples per evaluation (None: all)
    gradient_accumulation: int | None = None  # set when the budget changed the plan's


def schedule_plan(
    checked: CheckedPlan, profile: DataProfile | None, hardware: HardwareInfo, budget: float | None,
    fixed: dict[str, Any], precision: PrecisionDecision, split: Any,
) -> Schedule:  # fmt: skip
    """Time estimate; on CPU-only machines (or with a time budget) the steps that fill the budget."""
    accelerated = hardware.has_cuda or hardware.mps
    notes: list[str] = []
    if budget is not None:
        notes.append(f"Time budget {budget:g} min (training.time_budget_minutes).")
    elif not accelerated:
        budget = DEFAULT_CPU_BUDGET_MINUTES
        notes.append(f"Time budget {budget:g} min: the default on machines without a GPU "
                     "(change training.time_budget_minutes in forge.yaml, or --time-budget).")  # fmt: skip
    plan = checked.proposal
    if profile is None:
        return Schedule(None, plan.max_steps, budget, notes, ["No data given: the time is not estimated."])
    estimate = _Estimator(checked, profile, hardware, precision, split)
    evaluations = evaluations_for(accelerated)
    time = estimate(plan.max_steps, evaluations)
    eval_examples = None
    if budget is not None:
        eval_examples = _eval_examples(time, estimate.full_val_rows, budget)
        estimate.eval_examples = eval_examples
        time = estimate(plan.max_steps, evaluations)
        # Evaluations take at most EVAL_SHARE of the budget; the last one always runs.
        evaluations = max(1, min(evaluations, int(EVAL_SHARE * budget * 60 / max(time.seconds_per_eval, 1e-9))))
        time = estimate(plan.max_steps, evaluations)
        if eval_examples:
            notes.append(f"Each evaluation scores {eval_examples} of the {estimate.full_val_rows:,} validation "
                         "examples (the same ones every time): the whole split would eat the budget.")  # fmt: skip
    notes.append(f"~{human_duration(time.seconds_per_epoch)} per epoch at ~{time.tokens_per_second:,.0f} tokens/s "
                 f"({time.basis}).")  # fmt: skip
    if budget is None or time.seconds_total <= budget * 60:
        return Schedule(time, plan.max_steps, budget, notes, [], evaluations=evaluations,
                        eval_max_examples=eval_examples)  # fmt: skip
    if "epochs" in fixed or "max_steps" in fixed:
        warning = (f"Your --epochs/--max-steps take ~{human_duration(time.seconds_total)}, more than the "
                   f"{budget:g} min time budget; kept as you asked.")  # fmt: skip
        return Schedule(time, plan.max_steps, budget, notes, [warning], evaluations=evaluations,
                        eval_max_examples=eval_examples)  # fmt: skip
    accumulation = plan.gradient_accumulation
    steps = steps_within(budget * 60, time)
    while steps < MIN_BUDGET_STEPS and accumulation > 1 and "micro_batch_size" not in fixed:
        accumulation = max(1, accumulation // 2)
        time = estimate(plan.max_steps, evaluations, accumulation)
        steps = steps_within(budget * 60, time)
    if steps < 1:
        raise _budget_too_small(budget, time)
    if accumulation != plan.gradient_accumulation:
        fewer = steps * accumulation // plan.gradient_accumulation
        notes.append(
            f"Gradient accumulation {plan.gradient_accumulation} -> {accumulation}: the budget holds few examples, "
            f"and {steps} smaller optimizer steps learn more from them than {fewer} big ones."
        )
    bounded = estimate(steps, evaluations, accumulation)
    notes.append(
        f"max_steps {steps} ({steps / bounded.steps_per_epoch:.2f} epochs of ~{bounded.steps_per_epoch} steps) "
        f"and {evaluations} evaluation(s) fill the {budget:g} min budget (~{human_duration(bounded.seconds_total)} "
        "with start-up)."
    )
    return Schedule(bounded, steps, budget, notes, [], evaluations=evaluations, gradient_accumulation=accumulation,
                    eval_max_examples=eval_examples)  # fmt: skip


def _eval_examples(time: TimeEstimate, val_rows: int, budget: float) -> int | None:
    """How many validation examples one evaluation may score so that it costs at most EVAL_ONE_SHARE of
    the budget (never fewer than MIN_EVAL_EXAMPLES); None when the whole split is affordable."""
    affordable = EVAL_ONE_SHARE * budget * 60
    if time.seconds_per_eval <= affordable or val_rows <= MIN_EVAL_EXAMPLES:
        return None
    return max(MIN_EVAL_EXAMPLES, int(val_rows * affordable / time.seconds_per_eval))


def check_lr_moves(checked: CheckedPlan, schedule: Schedule) -> CheckedPlan:
    """A learning rate too small for the planned steps is raised, with the reason: one that cannot move the
    model at all, or a small model's LoRA rate in a run too short for it (rules_plan.learning_rate_total_for)."""
    plan, time, budget = checked.proposal, schedule.time, checked.budget
    steps = schedule.max_steps or (time.total_steps if time else None)
    params = checked.target.params
    epochs = steps / time.steps_per_epoch if steps and time and time.steps_per_epoch else math.inf
    target = rules_plan.learning_rate_total_for(params, plan.method, budget.precision, budget.device, epochs=epochs)
    if not steps or plan.learning_rate * steps >= target:
        return checked
    _, high = rules_plan.learning_rate_range(params, plan.method, budget.precision, budget.device)
    good, _ = rules_plan.learning_rate_for(params, plan.method, budget.precision, budget.device)
    lr = min(high, max(good, target / steps))
    if lr <= plan.learning_rate:
        return checked
    total = f"move the model by at most ~{plan.learning_rate * steps:.1g} (the sum of the step sizes)"
    if not rules_plan.learning_rate_moves(plan.learning_rate, steps):
        reason = f"{steps} steps at {plan.learning_rate:g} {total}, too little to change it (at least " \
                 f"{rules_plan.MIN_LR_TOTAL:g} is needed)."  # fmt: skip
    else:
        reason = f"{steps} steps at {plan.learning_rate:g} {total}: a short run for a model this small, " \
                 f"which learns more when the sum reaches {target:g} ({rules_plan.SHORT_RUN_EVIDENCE})."  # fmt: skip
    if not rules_plan.learning_rate_moves(lr, steps):
        reason += f" Even {lr:g} is little for {steps} steps: give training more time."
    elif lr * steps < target:
        reason += f" {high:g} is the highest safe rate, so more time would still help."
    correction = Correction("learning_rate", plan.learning_rate, lr, reason)
    proposal = plan.model_copy(update={"learning_rate": lr})
    return replace(checked, proposal=proposal, corrections=[*checked.corrections, correction])


def _budget_too_small(budget: float, time: TimeEstimate) -> ForgeError:
    step = seconds_per_step(time)
    needed = STARTUP_SECONDS + step + time.evaluations * time.seconds_per_eval
    minutes = math.ceil(needed / 60 * 1.2 * 10) / 10
    return ForgeError(
        f"A time budget of {budget:g} min cannot hold one training step: one step takes ~{step:.0f} s here "
        f"({time.tokens_per_step:,} tokens at ~{time.tokens_per_second:,.0f} tokens/s, {time.basis}), plus "
        f"~{STARTUP_SECONDS:.0f} s to start and ~{time.seconds_per_eval:.0f} s per evaluation.",
        fix=f"Give training at least {minutes:g} minutes: --time-budget {minutes:g} (or training.time_budget_minutes "
        "in forge.yaml).",
        code=ErrorCode.TIME_BUDGET_TOO_SMALL,
    )


class _Estimator:
    """estimate_time for this plan, with the measured throughput when there is one."""

    def __init__(
        self, checked: CheckedPlan, profile: DataProfile, hardware: HardwareInfo, precision: PrecisionDecision,
        split: Any,
    ) -> None:  # fmt: skip
        self.checked, self.profile, self.hardware, self.split = checked, profile, hardware, split
        self.full_val_rows = int(profile.rows * split.val)
        self.eval_examples: int | None = None  # the val subset one evaluation scores (None: all)
        speed = precision.tokens_per_second
        self.measured = (speed, f"{precision.shape}, {precision.precision}") if speed else None

    def __call__(self, max_steps: int | None, evaluations: int, accumulation: int | None = None) -> TimeEstimate:
        plan, profile, split = self.checked.proposal, self.profile, self.split
        effective = plan.micro_batch_size * (accumulation or plan.gradient_accumulation)
        return estimate_time(
            params=self.checked.target.params, method=plan.method, hardware=self.hardware,
            gradient_checkpointing=plan.gradient_checkpointing, train_rows=int(profile.rows * split.train),
            val_rows=self.eval_examples or self.full_val_rows, mean_tokens=profile.tokens["mean"],
            max_length=plan.max_length,
            effective_batch=effective, packing=plan.packing, epochs=plan.epochs or 1.0, max_steps=max_steps,
            evaluations=evaluations, measured=self.measured,
        )  # fmt: skip


