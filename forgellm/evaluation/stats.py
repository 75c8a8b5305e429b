"""How sure a figure is: 95% intervals for the stop rate (a share of answers) and for the change of the
test loss (paired per example), so a report shows which differences are real and which are noise."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Z95 = 1.959963984540054  # two-sided 95% quantile of the standard normal distribution
# Student's t two-sided 95% quantiles for 1..30 degrees of freedom (standard tables); beyond 30 the
# Cornish-Fisher expansion below is exact to 4 decimals, so no statistics package is needed.
_T95 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
CHANGED = 0.01  # an example whose loss moved by less than 1% of itself counts as unchanged


def wilson_interval(successes: int, total: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a share: unlike "p ± 1.96·SE" it stays inside [0, 1] and is honest at
    0/n and n/n, where most stop rates of small samples sit. None when there is nothing to count."""
    if total <= 0:
        return None
    share = successes / total
    denominator = 1 + z * z / total
    centre = (share + z * z / (2 * total)) / denominator
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: rounding must not show 0/n as 0.1%
    return low, 1.0 if successes == total else min(1.0, centre + half)


def t_quantile_95(degrees: int) -> float:
    """Two-sided 95% quantile of Student's t with ``degrees`` degrees of freedom (>= 1)."""
    if degrees < 1:
        raise ValueError("Student's t needs at least one degree of freedom")
    if degrees <= len(_T95):
        return _T95[degrees - 1]
    z, v = Z95, float(degrees)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


@dataclass
class LossChange:
    """Fine-tuned minus base test loss, per example: its mean with a 95% t-interval, and how many
    examples moved by more than `CHANGED` of their base loss either way."""

    examples: int
    mean_difference: float | None
    interval: tuple[float, float] | None  # None with fewer than two examples
    lower: int  # examples whose loss fell by more than CHANGED
    higher: int  # examples whose loss rose by more than CHANGED

    @property
    def within_noise(self) -> bool:
        """The interval holds 0 (or there is none): no change can be told from chance."""
        return self.interval is None or self.interval[0] <= 0.0 <= self.interval[1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "mean_difference": self.mean_difference,
            "ci95": list(self.interval) if self.interval is not None else None,
            "examples_lower": self.lower,
            "examples_higher": self.higher,
            "examples_unchanged": self.examples - self.lower - self.higher,
            "changed_threshold": CHANGED,
        }


def paired_loss_change(base: Sequence[float | None], tuned: Sequence[float | None]) -> LossChange:
    """The per-example differences of two models' losses on the same examples (pairs with a missing loss,
    i.e. a non-finite one, are left out). Paired, because examples differ far more from each other than
    the two models differ on one example."""
    pairs = [(b, t) for b, t in zip(base, tuned, strict=True) if b is not None and t is not None]
    differences = [t - b for b, t in pairs]
    count = len(differences)
    if count == 0:
        return LossChange(0, None, None, 0, 0)
    mean_difference = sum(differences) / count
    interval = None
    if count >= 2:
        variance = sum((d - mean_difference) ** 2 for d in differences) / (count - 1)
        half = t_quantile_95(count - 1) * math.sqrt(variance / count)
        interval = (mean_difference - half, mean_difference + half)
    lower = sum(1 for b, t in pairs if t < b - CHANGED * abs(b))
    higher = sum(1 for b, t in pairs if t > b + CHANGED * abs(b))
    return LossChange(count, mean_difference, interval, lower, higher)


def relative_change(base: float | None, tuned: float | None) -> float | None:
    """(tuned - base) / base: -0.05 is a 5% lower loss."""
    if base is None or tuned is None or base == 0:
        return None
    return (tuned - base) / base
