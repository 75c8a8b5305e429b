"""The mixture rule: how `data.sources`' ratios and counts become numbers of examples, and which
examples each source gives. The one home of this rule (README "Data mixtures" says it to users).

Decisions:
- Counts are taken *after* preparation (recipe, cleaning, filters, duplicates, length): "available" is
  what a source really gives, so the numbers in stats.json are the numbers trained on — exactly.
- The ratios and counts are of the **training** split. A `count` source gives exactly `count` training
  examples (more than it has is an error, never a silent shortfall). The sources given by `ratio` share
  the rest of the mixture in their ratios (which sum to 1): the training total T of that part is the
  largest for which every ratio source has its share without repeating an example, so the source with
  the least data for its ratio uses all of it (`limited_by`) and the others are sampled. Repeating
  examples (sampling with replacement) would give duplicates, which prepare's de-duplication exists to
  remove; shrinking the total is what is said instead, in the prepare output and in stats.json.
  Shares that are not whole numbers are rounded by largest remainder, so they sum to T exactly and each
  is within 1 of ratio * T.
- val and test are drawn per source: each source keeps the same fraction of its held-out rows as of its
  training rows, so every source (a general one too) has held-out rows in proportion to its share.
- Which examples: those with the smallest seeded hash of their content key. Deterministic for a seed,
  independent of chunk size and file order, and streamed: the first pass keeps one 8-byte hash per row
  (not the rows), the second keeps a row when its hash is under its source's threshold. Ties (identical
  content, kept when exact duplicates are allowed) are broken by order in the stream, so counts stay exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from forgellm.errors import ErrorCode, ForgeError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Share:
    """What one source asks for: a ratio (among the ratio sources) or an exact count of training examples."""

    name: str
    ratio: float | None = None
    count: int | None = None


def apportion(total: int, ratios: list[float]) -> list[int]:
    """`total` split in `ratios` (summing to 1) by largest remainder: sums to `total`, each within 1 of
    ratio * total; ties go to the earlier source."""
    exact = [r * total for r in ratios]
    counts = [math.floor(x + 1e-9) for x in exact]
    order = sorted(range(len(ratios)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def train_targets(shares: list[Share], available: dict[str, int]) -> tuple[dict[str, int], str | None]:
    """Training examples per source (the rule above) and the ratio source that limited the total."""
    targets: dict[str, int] = {}
    for share in shares:
        if share.count is not None:
            have = available.get(share.name, 0)
            if share.count > have:
                raise ForgeError(
                    f"Source '{share.name}' has {have:,} training examples after preparation, fewer than its "
                    f"count ({share.count:,}).",
                    fix=f"Set count: {have} (or less) for '{share.name}' in data.sources, add data to it, or give "
                    "it a ratio instead.",
                    code=ErrorCode.DATA_MIXTURE_SHORT,
                    data={"name": share.name, "count": share.count, "available": have},
                )
            targets[share.name] = share.count
    by_ratio = [s for s in shares if s.ratio is not None]
    if not by_ratio:
        return targets, None
    ratios = [float(s.ratio or 0) for s in by_ratio]
    for share in by_ratio:
        if available.get(share.name, 0) == 0:
            raise ForgeError(
                f"Source '{share.name}' has no training example left after preparation, so no mixture can give "
                f"it its ratio ({share.ratio:g}).",
                fix=f"Look at the rejected rows of '{share.name}' (rejects.jsonl), fix its format or recipe in "
                "data.sources, or remove it from the mixture.",
                code=ErrorCode.DATA_MIXTURE_SHORT,
                data={"name": share.name, "count": 0, "available": 0},
            )
    # The largest total for which every ratio source has its share: floor(available / ratio) per source...
    limits = {s.name: math.floor(available[s.name] / r + 1e-9) for s, r in zip(by_ratio, ratios, strict=True)}
    total = min(limits.values())
    # ...then down while rounding would ask a source for one more than it has (at most a few steps).
    while True:
        counts = apportion(total, ratios)
        if all(n <= available[s.name] for s, n in zip(by_ratio, counts, strict=True)):
            break
        total -= 1
    limited_by = min(by_ratio, key=lambda s: (limits[s.name], by_ratio.index(s))).name
    targets.update({s.name: n for s, n in zip(by_ratio, counts, strict=True)})
    return targets, limited_by


def held_out_targets(train: dict[str, int], available: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """(source, split) -> examples: train as given; val and test the same fraction of each source's
    held-out rows as of its training rows."""
    targets: dict[tuple[str, str], int] = {}
    for name, used in train.items():
        have = available.get((name, "train"), 0)
        fraction = used / have if have else 0.0
        targets[(name, "train")] = used
        for split in ("val", "test"):
            have_held = available.get((name, split), 0)
            targets[(name, split)] = min(have_held, round(fraction * have_held))
    return targets


_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def rank(keys: np.ndarray, seed: int) -> np.ndarray:
    """A seeded 64-bit hash of each content key (splitmix64, vectorised; uint64 arithmetic wraps)."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) + np.uint64((seed + 1) & 0xFFFFFFFFFFFFFFFF) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


@dataclass
class Selection:
    """Keeps exactly `target` rows per (source, split): those of smallest rank, ties in stream order."""

    thresholds: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # -> (threshold, ties)
    used: dict[tuple[str, str], int] = field(default_factory=dict)

    @classmethod
    def plan(cls, ranks: dict[tuple[str, str], np.ndarray], targets: dict[tuple[str, str], int]) -> Selection:
        selection = cls()
        for group, values in ranks.items():
            want = targets.get(group, 0)
            if want >= len(values):
                selection.thresholds[group] = (2**64, 0)  # every row (ranks are < 2**64)
            elif want == 0:
                selection.thresholds[group] = (0, 0)
            else:
                threshold = int(np.partition(values, want - 1)[want - 1])
                selection.thresholds[group] = (threshold, want - int(np.count_nonzero(values < threshold)))
        return selection

    def keep(self, source: str, split: str, row_rank: int) -> bool:
        group = (source, split)
        threshold, ties = self.thresholds.get(group, (0, 0))
        chosen = row_rank < threshold
        if not chosen and row_rank == threshold and ties > 0:
            self.thresholds[group] = (threshold, ties - 1)
            chosen = True
        if chosen:
            self.used[group] = self.used.get(group, 0) + 1
        return chosen


@dataclass
class MixturePlan:
    """The rule applied to one preparation: given every kept row's rank per (source, split) (the merge's
    first pass), the targets and the selection; afterwards what stats.json says of each source."""

    shares: list[Share]
    seed: int
    available: dict[tuple[str, str], int] = field(default_factory=dict)
    targets: dict[tuple[str, str], int] = field(default_factory=dict)
    limited_by: str | None = None
    selection: Selection | None = None

    def choose(self, ranks: dict[tuple[str, str], np.ndarray]) -> Selection:
        self.available = {group: len(values) for group, values in ranks.items()}
        train = {s.name: self.available.get((s.name, "train"), 0) for s in self.shares}
        wanted, self.limited_by = train_targets(self.shares, train)
        self.targets = held_out_targets(wanted, self.available)
        self.selection = Selection.plan(ranks, self.targets)
        return self.selection

    def per_source(self) -> dict[str, dict[str, int]]:
        """{name: {train, val, test, available, used}} once the merge has selected the rows."""
        used = self.selection.used if self.selection else {}
        out = {}
        for share in self.shares:
            counts = {split: used.get((share.name, split), 0) for split in SPLITS}
            available = sum(self.available.get((share.name, split), 0) for split in SPLITS)
            out[share.name] = {**counts, "available": available, "used": sum(counts.values())}
        return out

    def note(self) -> str:
        """How the training counts were set, in a sentence for the prepare output and stats.json."""
        train = {s.name: self.targets.get((s.name, "train"), 0) for s in self.shares}
        by_ratio = [s for s in self.shares if s.ratio is not None]
        parts = []
        if by_ratio and self.limited_by is not None:
            total = sum(train[s.name] for s in by_ratio)
            have = self.available.get((self.limited_by, "train"), 0)
            parts.append(
                f"{total:,} training examples in the ratios given: '{self.limited_by}' has the least data for its "
                f"ratio and gives {train[self.limited_by]:,} of its {have:,}; the others are sampled to their "
                "shares (no example repeated). Add data to it (or lower its ratio) for a larger mixture."
            )
        counted = [s for s in self.shares if s.count is not None]
        if counted:
            parts.append("exactly " + ", ".join(f"{s.count:,} from '{s.name}'" for s in counted) + " (count).")
        parts.append("val and test: each source gives the same fraction of its held-out rows as of its training rows.")
        return " ".join(parts)


def select_counts(shares: list[Share], keys: dict[tuple[str, str], np.ndarray], seed: int) -> dict[str, Any]:
    """Which rows a mixture keeps, as {group: kept positions} in stream order, with the targets: the merge's
    two passes on arrays (what the property tests check)."""
    plan = MixturePlan(shares, seed)
    ranks = {group: rank(values, seed) for group, values in keys.items()}
    selection = plan.choose(ranks)
    kept = {
        group: [i for i, r in enumerate(values.tolist()) if selection.keep(*group, r)]
        for group, values in ranks.items()
    }
    return {"targets": plan.targets, "kept": kept, "limited_by": plan.limited_by}


def mixture_stats(mixture: Any, plan: MixturePlan | None) -> dict[str, Any]:
    """The prepared stats' `sources` and `mixture` of a preparation of data.sources (sources.Mixture); {} else."""
    if mixture is None or plan is None:
        return {}
    counts = plan.per_source()
    sources = {s.name: {**s.describe(), **counts[s.name]} for s in mixture.sources}
    train_total = sum(c["train"] for c in counts.values())
    return {
        "sources": sources,
        "mixture": {"seed": plan.seed, "train_total": train_total, "limited_by": plan.limited_by, "note": plan.note()},
    }
