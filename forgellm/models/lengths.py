"""max_length, the longest training sequence: one rule for every place that derives or cuts it.

The study suggests it, the rules plan it, the planner sizes candidates with it, the guards cut it to
fit memory and the diagnosis cuts it after an out-of-memory failure; all of them call this module, so
the value and its floor are the same whichever way a plan gets there.
"""

from __future__ import annotations

import math

LENGTH_MULTIPLE = 64  # tensor-core and kernel friendly
DEFAULT_MAX_LENGTH = 1024  # no data to measure: a common conversation fits
# Never planned, suggested or cut below this: lengths are measured on the messages' text, without the
# chat template's role headers and system prompt, and shorter rows rarely hold a question and its answer.
MIN_MAX_LENGTH = 256


def max_length_for(p99: float | None, context_length: int | None = None) -> tuple[int, str]:
    """(max_length, why): the token p99 rounded up to a multiple of 64, at least MIN_MAX_LENGTH, capped
    by the model's context when it is known."""
    cap = context_length if context_length else None
    if p99 is None:
        value = min(DEFAULT_MAX_LENGTH, cap) if cap else DEFAULT_MAX_LENGTH
        return value, f"max_length {value}: no data was measured, so a common conversation length is assumed."
    value = max(MIN_MAX_LENGTH, math.ceil(p99 / LENGTH_MULTIPLE) * LENGTH_MULTIPLE)
    if cap and value > cap:
        return cap, (
            f"max_length {cap}: the model's context; 1% of examples are longer than {p99:.0f} tokens "
            "and longer ones are split or cut."
        )
    if value == MIN_MAX_LENGTH and p99 < MIN_MAX_LENGTH:
        return value, (
            f"max_length {value}: 99% of examples are at most {p99:.0f} tokens; {MIN_MAX_LENGTH} is the least "
            "Forge plans (room for the chat template's headers)."
        )
    return value, f"max_length {value}: 99% of examples are at most {p99:.0f} tokens (rounded up to a multiple of 64)."


def cut_floor(p90: float | None = None) -> int:
    """The shortest max_length a memory cut may reach: MIN_MAX_LENGTH, and never below what 90% of the
    examples need (when measured)."""
    floor = MIN_MAX_LENGTH
    if p90:
        floor = max(floor, math.ceil(p90 / LENGTH_MULTIPLE) * LENGTH_MULTIPLE)
    return floor


def shorter_max_length(length: int, p90: float | None = None) -> int:
    """One memory-saving cut: half of ``length`` in multiples of 64, not below cut_floor(p90). Returns
    ``length`` itself when it cannot be cut."""
    floor = cut_floor(p90)
    if length <= floor:
        return length
    return max(floor, (length // 2) // LENGTH_MULTIPLE * LENGTH_MULTIPLE)
