"""Train/validation/test assignment that works while streaming.

- random: a seeded hash of the example's normalized content picks the split, so the result does not
  depend on chunk size or order, and identical examples always land in the same split (no leakage).
- stratified: per label, each new example goes to the split furthest below its target share
  ("largest deficit"); exact proportions per label, deterministic in file order, independent of
  chunking. (A repeat of an earlier example follows the earlier one's split: the caller looks it up
  in its key index, so identical examples never straddle two splits.)
- temporal: decided at the end from date cut-offs (oldest -> train, newest -> test), because the
  cut-offs need every date; rows are held with split = None until then.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from forgellm.config.schema import SplitSection
from forgellm.errors import ErrorCode, ForgeError

SPLITS = ("train", "val", "test")

# The synthetic rule: rows an advisor wrote (`forge expand` marks them `synthetic: true`) go to train only, so
# val and test measure the model on real data alone. They take no share of a stratified split's counts, and
# a temporal split (placed by date at the end, output.final_splits) leaves them in train.
SYNTHETIC_FIELD = "synthetic"


def is_synthetic(fields: dict) -> bool:
    """Whether a record is marked as written by an advisor (the synthetic rule)."""
    return fields.get(SYNTHETIC_FIELD) is True


def content_key(text: str) -> int:
    """A 63-bit key of the normalized content: equal keys mean 'the same example' (dedup, leakage).

    63 bits so it fits SQLite's signed integer; a collision among 10^8 examples has odds ~1e-3.
    """
    normalized = " ".join(text.lower().split())
    digest = hashlib.blake2b(normalized.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


_MASK = (1 << 64) - 1


def hash_unit(key: int, seed: int) -> float:
    """A number in [0, 1) determined by the key and the seed (splitmix64 finalizer: fast, well mixed)."""
    z = (key + (seed + 1) * 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return (z ^ (z >> 31)) / 2**64


@dataclass
class SplitAssigner:
    """Assigns splits; its state (per-label counters, content-key -> split) is saved with each chunk."""

    settings: SplitSection
    seed: int
    counts: dict[str, list[int]] = field(default_factory=dict)  # label -> [train, val, test] counts

    @property
    def ratios(self) -> tuple[float, float, float]:
        return (self.settings.train, self.settings.val, self.settings.test)

    def assign(self, key: int, label: str | None, *, synthetic: bool = False) -> str | None:
        if synthetic:  # the synthetic rule (above): train only
            return "train"
        method = self.settings.method
        if method == "temporal":
            return None
        if method == "random":
            return SPLITS[_bucket(hash_unit(key, self.seed), self.ratios)]
        tally = self.counts.setdefault(label or "", [0, 0, 0])
        total = sum(tally) + 1
        # Largest deficit between the target count and the current count; ties go to train first.
        deficits = [ratio * total - have for ratio, have in zip(self.ratios, tally, strict=True)]
        index = max(range(3), key=lambda i: (deficits[i], -i))
        tally[index] += 1
        return SPLITS[index]

    def state(self) -> dict:
        return {"counts": {label: list(values) for label, values in self.counts.items()}}

    def restore(self, state: dict) -> None:
        self.counts = {label: list(values) for label, values in state.get("counts", {}).items()}


def _bucket(unit: float, ratios: tuple[float, float, float]) -> int:
    if unit < ratios[0]:
        return 0
    if unit < ratios[0] + ratios[1]:
        return 1
    return 2


def parse_date(value: str | None) -> float | None:
    """Seconds since the epoch for ISO-like dates ('2023-06-01', '2023-06-01 12:15:36', ...), else None."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        pass
    for layout in ("%d/%m/%Y", "%m/%d/%Y", "%Y/%m/%d", "%d.%m.%Y"):
        try:
            return datetime.strptime(text, layout).timestamp()
        except ValueError:
            continue
    return None


def temporal_cutoffs(dates: list[float], ratios: tuple[float, float, float]) -> tuple[float, float]:
    """Dates at or below the first cut-off are train, up to the second val, the rest test."""
    if not dates:
        raise ForgeError(
            "A temporal split needs dates, but no row had a readable date.",
            fix="Set preprocessing.split.column to a column with ISO dates (2024-05-31), or use method: random.",
            code=ErrorCode.DATA_RECIPE_MISMATCH,
        )
    ordered = sorted(dates)
    last = len(ordered) - 1
    first_cut = ordered[min(last, max(0, round(ratios[0] * len(ordered)) - 1))]
    second_cut = ordered[min(last, max(0, round((ratios[0] + ratios[1]) * len(ordered)) - 1))]
    return first_cut, second_cut


def temporal_split(date: float, cutoffs: tuple[float, float]) -> str:
    if date <= cutoffs[0]:
        return "train"
    if date <= cutoffs[1]:
        return "val"
    return "test"
