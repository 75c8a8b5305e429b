"""The settings no advisor is asked for: evaluation and checkpoint cadence, early stopping.

They depend on the final number of steps (after the time budget), so they are decided last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Each evaluation costs a pass over the validation split; on a CPU that is minutes, so fewer of them.
EVALUATIONS_GPU = 10
EVALUATIONS_CPU = 5
MIN_STEPS_FOR_CADENCE = 20  # below this, once per epoch is frequent enough


@dataclass(frozen=True)
class Cadence:
    eval_every_steps: int | None
    save_every_steps: int | None
    early_stopping: bool
    patience: int
    reason: str


def evaluations_for(accelerated: bool) -> int:
    return EVALUATIONS_GPU if accelerated else EVALUATIONS_CPU


def cadence_for(total_steps: int, accelerated: bool, evaluations: int | None = None) -> Cadence:
    """Evaluate (and checkpoint the best) ``evaluations`` times per run (default: evaluations_for; the
    plan gives fewer when a time budget cannot afford them); stop early after 3 misses."""
    evaluations = evaluations or evaluations_for(accelerated)
    if evaluations <= 1:
        return Cadence(total_steps, total_steps, False, 3, (
            "Evaluated once, at the end: the time budget is better spent on training steps than on "
            "validation passes."
        ))  # fmt: skip
    if total_steps < MIN_STEPS_FOR_CADENCE:
        return Cadence(None, None, False, 3, (
            f"{total_steps} steps: evaluated and saved once per epoch; too few evaluations for early stopping."
        ))  # fmt: skip
    every = max(1, math.ceil(total_steps / evaluations))
    return Cadence(every, every, True, 3, (
        f"Evaluated and saved every {every} steps (~{evaluations} times); training stops early after 3 "
        "evaluations without improvement, and the best checkpoint is kept."
    ))  # fmt: skip
