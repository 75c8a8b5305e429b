"""Token-level loss on the tokenized test split: the mean cross-entropy over the tokens training
learned from (labels != -100), per example and overall, for one model.

Examples are sorted by length and cut into batches of similar lengths under a token budget, so almost
no compute goes to padding, and the peak memory (the logits of one batch) stays bounded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from forgellm.training.packing import IGNORE_INDEX, collate_padded

if TYPE_CHECKING:
    from forgellm.inference.engines import TransformersEngine

BATCH_TOKENS = 1024  # tokens per forward pass: logits of 1024 x 50k vocabulary are ~200 MB in fp32


@dataclass
class LossScores:
    """Summed loss and trained-token count of each example, in the order the examples were given."""

    sums: np.ndarray
    counts: np.ndarray

    @property
    def mean(self) -> float | None:
        """Mean loss per trained token over all examples (long answers weigh more, as in training)."""
        total = int(self.counts.sum())
        return _finite(self.sums.sum() / total) if total else None

    @property
    def per_example(self) -> list[float | None]:
        return [_finite(s / c) if c else None for s, c in zip(self.sums, self.counts, strict=True)]


def _finite(value: float) -> float | None:
    """A NaN or infinite loss (a broken model) is reported as missing: JSON has no NaN."""
    value = float(value)
    return value if math.isfinite(value) else None


def choose_examples(lengths: np.ndarray, targets: np.ndarray, offsets: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Indices of at most ``limit`` examples that have a trained token, a seeded random choice (a split
    written in file order, e.g. a temporal one, would otherwise be judged by its first rows only)."""
    usable = np.asarray(
        [i for i in range(len(lengths)) if (targets[offsets[i] + 1 : offsets[i + 1]] != IGNORE_INDEX).any()],
        dtype=np.int64,
    )
    if len(usable) > limit:
        usable = np.sort(np.random.default_rng(seed).choice(usable, size=limit, replace=False))
    return usable


def _batches(lengths: np.ndarray, budget: int) -> list[np.ndarray]:
    """Positions (into ``lengths``) grouped by similar length: each batch's rows x longest <= budget."""
    order = np.argsort(lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end - start + 1) * int(lengths[order[end]]) <= budget:
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def score_losses(
    engine: TransformersEngine,
    split: Any,
    indices: np.ndarray,
    *,
    advance: Callable[[int, int], None],
    budget: int = BATCH_TOKENS,
) -> LossScores:
    """Loss of each example of ``split`` (a TokenizedSplit) listed in ``indices``, with ``engine``'s model
    (its adapter switched off when the engine is the base view of a fine-tuned model)."""
    import contextlib

    import torch

    model = engine.model
    device = next(model.parameters()).device
    toggle = model.disable_adapter() if not engine.adapter_enabled else contextlib.nullcontext()
    lengths = split.lengths[indices]
    sums, counts = np.zeros(len(indices)), np.zeros(len(indices), dtype=np.int64)
    done = 0
    advance(0, len(indices))  # the total is known before the first batch
    with torch.inference_mode(), toggle:
        for batch in _batches(lengths, budget):
            examples = [split.example(int(i)) for i in indices[batch]]
            padded = collate_padded([e[0] for e in examples], [e[1] for e in examples], pad_id=0)  # masked out
            logits = model(
                input_ids=padded.input_ids.to(device), attention_mask=padded.attention_mask.to(device)
            ).logits
            targets = padded.labels[:, 1:].to(device)  # the model predicts token t+1 from tokens up to t
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
            )
            sums[batch] = losses.sum(dim=1).double().cpu().numpy()
            counts[batch] = (targets != IGNORE_INDEX).sum(dim=1).cpu().numpy()
            done += len(batch)
            advance(done, len(indices))
    return LossScores(sums, counts)
