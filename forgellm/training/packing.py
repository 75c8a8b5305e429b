"""Arranging examples into rows and rows into micro-batches, packed or padded.

Packing puts several short examples into one row of ``max_length`` tokens without letting them see
each other: positions restart at 0 for each example, a block-diagonal causal mask keeps attention
inside each example, and the first token of each example is never a target (it would be predicted
from the previous example). The loss of every example is then what it would be alone in a row.

The arrangement of an epoch (which examples share a row) depends only on the epoch's order and
``max_length``, never on the micro-batch size: a run resumed with a smaller micro-batch meets the
same rows, and the data position can be counted in examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = -100
PACKING_WINDOW = 2048  # examples arranged together; bounds the work per row and keeps the epoch's shuffle


def arrange_rows(order: np.ndarray, lengths: np.ndarray, max_length: int, seed: int) -> list[np.ndarray]:
    """Example indices (in ``order``) -> rows of examples whose lengths add up to at most ``max_length``.

    Within each window of the order, first-fit-decreasing fills rows tightly; the rows of a window are
    then shuffled (seeded) so long examples do not always come first. An example longer than
    ``max_length`` (prepare never writes one) gets a row of its own.
    """
    rows: list[np.ndarray] = []
    for start in range(0, len(order), PACKING_WINDOW):
        window = order[start : start + PACKING_WINDOW]
        window_rows = _first_fit_decreasing(window, lengths, max_length)
        rng = np.random.default_rng([seed, start, len(order)])
        rows.extend(window_rows[i] for i in rng.permutation(len(window_rows)))
    return rows


def _first_fit_decreasing(window: np.ndarray, lengths: np.ndarray, max_length: int) -> list[np.ndarray]:
    by_length = window[np.argsort(-lengths[window], kind="stable")]
    members: list[list[int]] = []
    free = np.empty(0, dtype=np.int64)
    for example in by_length:
        size = int(lengths[example])
        fits = np.flatnonzero(free >= size)
        if len(fits):
            members[fits[0]].append(int(example))
            free[fits[0]] -= size
        else:
            members.append([int(example)])
            free = np.append(free, max(max_length - size, 0))
    return [np.asarray(row, dtype=np.int64) for row in members]


@dataclass
class Batch:
    """One micro-batch as tensors, plus what it costs and what it holds."""

    input_ids: object  # torch.LongTensor (batch, length)
    labels: object  # torch.LongTensor, IGNORE_INDEX where no loss is taken
    attention_mask: object  # (batch, length) for padded rows, (batch, 1, length, length) when packed
    position_ids: object  # torch.LongTensor; restarts at 0 at each example when packed
    examples: int
    tokens: int  # processed, padding included
    real_tokens: int  # not padding
    target_tokens: int  # tokens that carry a loss

    def to(self, device) -> Batch:
        moved = {k: getattr(self, k).to(device) for k in ("input_ids", "labels", "attention_mask", "position_ids")}
        return Batch(**moved, examples=self.examples, tokens=self.tokens,
                     real_tokens=self.real_tokens, target_tokens=self.target_tokens)


def collate_padded(
    input_ids: Sequence[np.ndarray], labels: Sequence[np.ndarray], pad_id: int
) -> Batch:
    """One example per row, right-padded to the longest in the micro-batch."""
    import torch

    width = max(len(ids) for ids in input_ids)
    ids = torch.full((len(input_ids), width), pad_id, dtype=torch.long)
    targets = torch.full((len(input_ids), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(input_ids), width), dtype=torch.long)
    for row, (example, example_labels) in enumerate(zip(input_ids, labels, strict=True)):
        ids[row, : len(example)] = torch.from_numpy(np.asarray(example, dtype=np.int64))
        targets[row, : len(example)] = torch.from_numpy(np.asarray(example_labels, dtype=np.int64))
        mask[row, : len(example)] = 1
    positions = torch.arange(width, dtype=torch.long).expand(len(input_ids), width).clone()
    real = int(mask.sum())
    return Batch(ids, targets, mask, positions, len(input_ids), ids.numel(), real, _target_count(targets))


def collate_packed(
    rows: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]],
    pad_id: int,
    *,
    mask_dtype=None,
) -> Batch:
    """Rows of several (input_ids, labels) examples -> tensors with a block-diagonal causal mask.

    ``mask_dtype`` None gives a boolean mask (True = may attend; what SDPA takes); a float dtype gives
    an additive mask (0 or the dtype's minimum; what eager attention takes).
    """
    import torch

    width = max(sum(len(ids) for ids, _ in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segments = torch.full((len(rows), width), -1, dtype=torch.long)  # -1 = padding
    examples = 0
    for row_index, row in enumerate(rows):
        cursor = 0
        for segment, (example, example_labels) in enumerate(row):
            end = cursor + len(example)
            ids[row_index, cursor:end] = torch.from_numpy(np.asarray(example, dtype=np.int64))
            targets[row_index, cursor:end] = torch.from_numpy(np.asarray(example_labels, dtype=np.int64))
            targets[row_index, cursor] = IGNORE_INDEX  # never predicted from the example before it
            positions[row_index, cursor:end] = torch.arange(len(example))
            segments[row_index, cursor:end] = segment
            cursor, examples = end, examples + 1
        positions[row_index, cursor:] = torch.arange(width - cursor)
    mask = block_causal_mask(segments, mask_dtype)
    real = int((segments >= 0).sum())
    return Batch(ids, targets, mask, positions, examples, ids.numel(), real, _target_count(targets))


def block_causal_mask(segments, dtype=None):
    """(batch, length) segment ids -> (batch, 1, length, length) causal mask inside each segment.

    Padding (segment -1) attends to itself only, so no row of the mask is empty (an empty row would
    give NaN in softmax); padding carries no loss and no real token attends to it.
    """
    import torch

    length = segments.shape[1]
    # A distinct negative id per padding position: "same segment" then means "itself" for padding.
    unique_padding = -1 - torch.arange(length).expand_as(segments)
    segments = torch.where(segments < 0, unique_padding, segments)
    causal = torch.ones((length, length), dtype=torch.bool).tril()
    allowed = ((segments[:, :, None] == segments[:, None, :]) & causal)[:, None]
    if dtype is None:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)


def _target_count(targets) -> int:
    # The model shifts labels by one: the first column is never a target.
    return int((targets[:, 1:] != IGNORE_INDEX).sum())


def padding_efficiency(batches: Sequence[Batch]) -> float:
    """Share of processed tokens that are real (1.0 = no padding at all)."""
    processed = sum(b.tokens for b in batches)
    return sum(b.real_tokens for b in batches) / processed if processed else 1.0
