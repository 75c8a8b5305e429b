"""Arranging examples into rows and rows into micro-batches, packed or padded.

Packing puts several short examples into one row of ``max_length`` tokens without letting them see
each other: positions restart at 0 for each example, a block-diagonal causal mask keeps attention
inside each example, and the first token of each example is never a target (it would be predicted
from the previous example). The loss of every example is then what it would be alone in a row.

The arrangement of an epoch (which examples share a row) depends only on the epoch's order and
``max_length``, never on the micro-batch size: a run resumed with a smaller micro-batch meets the
same rows, and the data position can be counted in examples. Rows are filled exactly where the
lengths allow (a row's gap closed by the examples whose lengths add up to it), so with short
examples nearly every row is ``max_length`` tokens long and a micro-batch carries almost no padding.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = -100
PACKING_WINDOW = 2048  # examples arranged together; bounds the work per row and keeps the epoch's shuffle


def arrange_rows(order: np.ndarray, lengths: np.ndarray, max_length: int, seed: int) -> list[np.ndarray]:
    """Example indices (in ``order``) -> rows of examples whose lengths add up to at most ``max_length``.

    Each window of the order is packed by exact filling and, unless that already needs the fewest rows
    possible, by first-fit-decreasing too; the packing with fewer rows is kept (so never more rows than
    first-fit-decreasing). The rows of a window are then shuffled (seeded) so long examples do not
    always come first. An example longer than ``max_length`` (prepare never writes one) gets a row of
    its own.
    """
    lengths = np.asarray(lengths)
    rows: list[np.ndarray] = []
    for start in range(0, len(order), PACKING_WINDOW):
        window = np.asarray(order[start : start + PACKING_WINDOW], dtype=np.int64)
        window_rows = _pack_window(window, lengths, max_length)
        rng = np.random.default_rng([seed, start, len(order)])
        rows.extend(window_rows[i] for i in rng.permutation(len(window_rows)))
    return rows


def _pack_window(window: np.ndarray, lengths: np.ndarray, max_length: int) -> list[np.ndarray]:
    # An empty example still takes a place: counting it as one token keeps every size positive.
    sizes = np.maximum(lengths[window].astype(np.int64), 1)
    oversize = sizes > max_length
    alone = [window[i : i + 1] for i in np.flatnonzero(oversize)]
    items, sizes = window[~oversize], sizes[~oversize]
    exact = _fill_exactly(items, sizes, max_length)
    if len(exact) <= _fewest_rows(sizes, max_length):  # nothing can do better: skip the second packing
        return alone + exact
    ffd = _first_fit_decreasing(items, sizes, max_length)
    # Exact filling wins on many small examples; first-fit-decreasing can win when most rows hold two
    # or three large ones and small fillers are scarce. Fewer rows = less padding, whatever the batch.
    return alone + (exact if len(exact) <= len(ffd) else ffd)


def _fewest_rows(sizes: np.ndarray, max_length: int) -> int:
    """A lower bound on the rows any packing needs (Martello and Toth's L2): for each k, examples longer
    than max_length - k each need a row, so do those longer than half a row, and examples of k to half a
    row fill what those leave free before they need rows of their own."""
    counts = np.bincount(sizes, minlength=max_length + 1)
    count_upto, sum_upto = np.cumsum(counts), np.cumsum(counts * np.arange(max_length + 1))
    half = max_length // 2
    k = np.arange(half + 1)
    alone = count_upto[-1] - count_upto[max_length - k]  # longer than max_length - k
    big = count_upto[max_length - k] - count_upto[half]  # half < size <= max_length - k
    big_sum = sum_upto[max_length - k] - sum_upto[half]
    small_sum = sum_upto[half] - np.concatenate([[0], sum_upto[:half]])  # k <= size <= half
    overflow = np.maximum(small_sum - (big * max_length - big_sum), 0)
    bound = alone + big + -(-overflow // max_length)
    return max(int(bound.max()), -(-int(sizes.sum()) // max_length))


def _fill_exactly(items: np.ndarray, sizes: np.ndarray, max_length: int) -> list[np.ndarray]:
    """Rows one at a time: the longest example left, then the gap closed exactly by one example or a
    pair whose lengths add up to it, else one more example of middling length and try again.

    First-fit-decreasing leaves in most rows a gap shorter than any example; closing gaps exactly puts
    the waste in the last rows of the window instead. Sizes are looked up in a histogram, so a row costs
    a few array operations of ``max_length`` elements, not a pass over the rows.
    """
    by_size = np.argsort(sizes, kind="stable")
    counts = np.bincount(sizes, minlength=max_length + 1)
    queue = items[by_size].tolist()  # examples by size; those of one size in window order
    next_of = (np.cumsum(counts) - counts).tolist()  # next unused place in ``queue`` per size
    left = counts.tolist()  # the same counts as ``counts``: a list is faster one size at a time
    sizes_left = np.flatnonzero(counts).tolist()  # ascending

    def take(size: int) -> int:
        left[size] -= 1
        counts[size] -= 1
        if not left[size]:
            del sizes_left[bisect_right(sizes_left, size) - 1]
        next_of[size] += 1
        return queue[next_of[size] - 1]

    rows: list[np.ndarray] = []
    while sizes_left:
        size = sizes_left[-1]
        row, gap = [take(size)], max_length - size
        while sizes_left and gap >= sizes_left[0]:
            if left[gap]:
                row.append(take(gap))
                break
            pairable = 2 * sizes_left[0] <= gap <= 2 * sizes_left[-1]
            pair = _closing_pair(counts, gap) if pairable else None
            if pair:
                row.extend(take(part) for part in pair)
                break
            size = _next_size(sizes_left, gap)
            row.append(take(size))
            gap -= size
        rows.append(np.asarray(row, dtype=np.int64))
    return rows


def _next_size(sizes_left: list[int], gap: int) -> int:
    """No exact close by one or two: a size near an even share of the gap among the fewest examples
    (three or more) that could fill it. Taking the longest instead uses up the short fillers early and
    ends the window with rows of middling examples that cannot be closed. With no room for three, the
    longest that fits (it ends the row)."""
    shortest, longest = sizes_left[0], sizes_left[-1]
    if gap < 3 * shortest:
        return sizes_left[bisect_right(sizes_left, gap) - 1]
    share = gap / max(3, -(-gap // longest))
    index = bisect_right(sizes_left, share)  # sizes_left[index - 1] <= share < sizes_left[index]
    below = sizes_left[index - 1] if index else None
    above = sizes_left[index] if index < len(sizes_left) and sizes_left[index] <= gap - shortest else None
    if below is None or (above is not None and above - share < share - below):
        return above if above is not None else sizes_left[bisect_right(sizes_left, gap) - 1]
    return below


def _closing_pair(counts: np.ndarray, gap: int) -> tuple[int, int] | None:
    """Two sizes still present that add up to ``gap``: those with the most examples left, so that no
    size runs out long before the others (ties: as equal as possible), or None."""
    half = gap // 2
    # min(counts[a], counts[gap - a]) for a = half, half - 1, ..., 1
    pairs = np.minimum(counts[half:0:-1], counts[gap - half : gap])
    if gap % 2 == 0:
        pairs[0] = counts[half] // 2  # a == gap - a takes two examples of one size
    best = int(pairs.argmax())
    if not pairs[best]:
        return None
    return gap - half + best, half - best


def _first_fit_decreasing(items: np.ndarray, sizes: np.ndarray, max_length: int) -> list[np.ndarray]:
    """First-fit-decreasing, placing the examples of one size together: the first row with room takes
    as many as fit, then the next, then new rows, which is what placing them one by one does."""
    if not len(items):
        return []
    by_size = np.argsort(-sizes, kind="stable")
    items, sizes = items[by_size], sizes[by_size]
    free = np.zeros(len(items), dtype=np.int64)  # room left per row; never more rows than examples
    row_of = np.empty(len(items), dtype=np.int64)
    opened = 0
    starts = np.flatnonzero(np.diff(sizes, prepend=-1))
    for first, end in zip(starts.tolist(), [*starts[1:].tolist(), len(items)], strict=True):
        size, count = int(sizes[first]), end - first
        fits = np.flatnonzero(free[:opened] >= size)
        takes = free[fits] // size
        last = int(np.searchsorted(np.cumsum(takes), count))  # the row with room that takes the last one
        if last < len(takes):
            takes = takes[: last + 1]
            takes[-1] -= int(takes.sum()) - count
        fits, placed_here = fits[: len(takes)], int(takes.sum())
        row_of[first : first + placed_here] = np.repeat(fits, takes)
        free[fits] -= takes * size
        rest, per_row = count - placed_here, max_length // size
        new_rows = -(-rest // per_row)
        new_ids = np.arange(opened, opened + new_rows)
        row_of[first + placed_here : end] = np.repeat(new_ids, per_row)[:rest]
        free[new_ids] = max_length - np.bincount(np.arange(rest) // per_row, minlength=new_rows) * size
        opened += new_rows
    members = items[np.argsort(row_of, kind="stable")]
    return np.split(members, np.cumsum(np.bincount(row_of, minlength=opened))[:-1])


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
