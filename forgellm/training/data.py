"""The prepared data as the worker reads it: checked, ordered per epoch, cut into micro-batches.

The order of an epoch is a function of (seed, epoch) alone, and the data position (epoch, index into
that order) counts examples, not batches, so a run resumed with another micro-batch size goes on
at the very example where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forgellm.errors import ErrorCode, ForgeError
from forgellm.training.packing import IGNORE_INDEX, Batch, arrange_rows, collate_packed, collate_padded

SPLIT_COLUMNS = ["input_ids", "labels", "length"]


@dataclass
class TokenizedSplit:
    """One split held as flat token buffers with offsets (compact: no Python object per token)."""

    name: str
    ids: np.ndarray
    targets: np.ndarray
    offsets: np.ndarray  # example i is ids[offsets[i]:offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def example(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        start, end = self.offsets[index], self.offsets[index + 1]
        return self.ids[start:end], self.targets[start:end]

    @property
    def tokens(self) -> int:
        return int(self.offsets[-1])

    def subset(self, count: int | None, seed: int = 0) -> TokenizedSplit:
        """``count`` examples chosen by ``seed`` (kept in split order), or the whole split."""
        if count is None or count >= len(self):
            return self
        chosen = np.sort(np.random.default_rng(seed).choice(len(self), size=count, replace=False))
        pieces = [self.example(int(i)) for i in chosen]
        offsets = np.zeros(count + 1, dtype=np.int64)
        np.cumsum([len(ids) for ids, _ in pieces], out=offsets[1:])
        return TokenizedSplit(
            self.name, np.concatenate([p[0] for p in pieces]), np.concatenate([p[1] for p in pieces]), offsets
        )


@dataclass
class DataPosition:
    """Where the next micro-batch starts: epoch and index into the epoch's order, in examples."""

    epoch: int = 0
    index: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> DataPosition:
        return cls(int(data["epoch"]), int(data["index"]))


def read_manifest_tokenizer(prepared_dir: Path) -> str | None:
    """The tokenizer id the data was prepared with; None when its manifest is missing or damaged."""
    from forgellm.project.prepared import PreparedData

    data = PreparedData.load(prepared_dir)
    return data.tokenizer_id if data is not None else None


def check_prepared(prepared_dir: Path, tokenizer_id: str) -> None:
    """Refuse data that is missing or was tokenized for another model."""
    prepare_fix = "Run `forge prepare FILE` (your data file) first; it writes data/prepared/."
    if not (prepared_dir / "train.parquet").is_file():
        raise ForgeError(
            f"No prepared training data at {prepared_dir}.", fix=prepare_fix, code=ErrorCode.PREPARED_DATA_MISSING
        )
    prepared_with = read_manifest_tokenizer(prepared_dir)
    if prepared_with is None:
        raise ForgeError(
            f"{prepared_dir} has no readable manifest.json.", fix=prepare_fix, code=ErrorCode.PREPARED_DATA_MISSING
        )
    if prepared_with != tokenizer_id:
        raise ForgeError(
            f"The data at {prepared_dir} was prepared with another tokenizer ({prepared_with}) than the model "
            f"being trained uses ({tokenizer_id}).",
            fix="Run `forge prepare FILE` again so the data is tokenized for this model.",
            code=ErrorCode.PREPARED_DATA_STALE,
        )


def load_split(prepared_dir: Path, split: str) -> TokenizedSplit:
    """Read input_ids/labels of one split in record batches (pre_buffer off keeps the peak small)."""
    import pyarrow.parquet as pq

    path = prepared_dir / f"{split}.parquet"
    if not path.is_file():
        return TokenizedSplit(split, np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(1, np.int64))
    parquet = pq.ParquetFile(path, pre_buffer=False)
    ids, targets, lengths = [], [], []
    for batch in parquet.iter_batches(columns=SPLIT_COLUMNS, batch_size=4096):
        ids.append(batch.column("input_ids").values.to_numpy(zero_copy_only=False))
        targets.append(batch.column("labels").values.to_numpy(zero_copy_only=False))
        lengths.append(batch.column("length").to_numpy(zero_copy_only=False))
    if not lengths:
        return TokenizedSplit(split, np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(1, np.int64))
    offsets = np.zeros(sum(len(x) for x in lengths) + 1, dtype=np.int64)
    np.cumsum(np.concatenate(lengths), out=offsets[1:])
    return TokenizedSplit(split, np.concatenate(ids), np.concatenate(targets), offsets)


def load_training_data(prepared_dir: Path, tokenizer_id: str, vocab_size: int) -> tuple[TokenizedSplit, TokenizedSplit]:
    """(train, val) after the checks; val may be empty (then no evaluation happens)."""
    check_prepared(prepared_dir, tokenizer_id)
    train, val = load_split(prepared_dir, "train"), load_split(prepared_dir, "val")
    if len(train) == 0:
        raise ForgeError(
            f"The prepared training split at {prepared_dir} is empty.",
            fix="Check the data and the filters of forge.yaml, then run `forge prepare FILE` again.",
            code=ErrorCode.PREPARED_DATA_MISSING,
        )
    highest = max(int(train.ids.max()), int(val.ids.max()) if len(val) else 0)
    if highest >= vocab_size:
        raise ForgeError(
            f"The prepared data holds token id {highest}, but the model knows only {vocab_size} tokens.",
            fix="Run `forge prepare FILE` again so the data is tokenized for this model.",
            code=ErrorCode.PREPARED_DATA_STALE,
        )
    return train, val


def prepared_max_length(prepared_dir: Path) -> int | None:
    """The model.max_length the prepared examples were cut to, from the preparation's own record
    (manifest.json; stats.json for data prepared before the manifest held it), never from forge.yaml."""
    from forgellm.project.layout import PreparedLayout
    from forgellm.project.prepared import PreparedData, PreparedStats

    data = PreparedData.load(prepared_dir)
    if data is not None:
        return data.max_length
    stats = PreparedStats.load(PreparedLayout(prepared_dir))  # no readable manifest: what stats.json says
    return stats.max_length if stats else None


@dataclass
class LengthCut:
    """What fitting prepared examples to a shorter max_length did (healing halves it after an OOM)."""

    prepared_max_length: int | None
    max_length: int
    cut: int = 0  # examples longer than max_length
    pieces_added: int = 0  # continued pre-training: extra examples from splitting long windows
    lost_stop_token: int = 0  # cut answers whose trained end-of-turn token fell beyond the cut
    dropped: int = 0  # examples (or pieces) left with no trained token

    def to_dict(self) -> dict[str, int | None]:
        return dict(self.__dict__)

    def message(self) -> str:
        was = f"prepared at {self.prepared_max_length}" if self.prepared_max_length else "prepared longer"
        text = f"Training examples are cut to model.max_length {self.max_length} ({was}): {self.cut} were longer"
        if self.pieces_added:
            text += f", split into {self.pieces_added} more pieces"
        if self.lost_stop_token:
            text += f"; {self.lost_stop_token} cut answers lost their end-of-turn token"
        if self.dropped:
            text += f"; {self.dropped} kept no answer token and were left out"
        return text + "."


def fit_to_length(split: TokenizedSplit, max_length: int, *, split_long: bool, cut: LengthCut) -> TokenizedSplit:
    """Every example at most ``max_length`` tokens, the labels cut with the ids.

    A chat example keeps its start (the prompt and the answer's beginning), as prepare's `truncate`
    does; a continued-pre-training window (``split_long``) is split into pieces, so no text is lost.
    Pieces left without a trained token (the model never predicts a piece's first token) are dropped.
    """
    lengths = split.lengths
    long = lengths > max_length
    if not long.any():
        return split
    counts = np.where(long, -(-lengths // max_length), 1) if split_long else np.ones(len(split), np.int64)
    owner = np.repeat(np.arange(len(split)), counts)
    within = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    starts = split.offsets[owner] + within * max_length
    ends = np.minimum(starts + max_length, split.offsets[owner + 1])
    trained_so_far = np.concatenate([[0], np.cumsum(split.targets != IGNORE_INDEX)])
    trained = trained_so_far[ends] - trained_so_far[np.minimum(starts + 1, ends)]
    keep = (trained > 0) | ~long[owner]  # short examples stay exactly as prepared
    cut.cut += int(long.sum())
    cut.pieces_added += int(counts.sum() - len(split))
    cut.dropped += int((~keep).sum())
    if not split_long:  # as prepare counts it: a trained token (the answer's last) lay past the cut
        ends_of = split.offsets[1:]
        beyond = trained_so_far[ends_of] - trained_so_far[np.minimum(split.offsets[:-1] + max_length, ends_of)]
        cut.lost_stop_token += int((long & (beyond > 0) & keep).sum())
    starts, ends = starts[keep], ends[keep]
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(ends - starts, out=offsets[1:])
    gather = np.arange(offsets[-1]) + np.repeat(starts - offsets[:-1], ends - starts)
    return TokenizedSplit(split.name, split.ids[gather], split.targets[gather], offsets)


def fit_splits_to_length(
    prepared_dir: Path, splits: tuple[TokenizedSplit, TokenizedSplit], max_length: int, *, cpt: bool
) -> tuple[TokenizedSplit, TokenizedSplit, LengthCut | None]:
    """(train, val) cut to the run's max_length when it is below the prepared one (healing's "cut
    examples to N tokens"), with what was done; None when the prepared examples already fit."""
    prepared = prepared_max_length(prepared_dir)
    if prepared is not None and prepared <= max_length:
        return (*splits, None)
    cut = LengthCut(prepared, max_length)
    train, val = (fit_to_length(s, max_length, split_long=cpt, cut=cut) for s in splits)
    if cut.cut == 0:
        return train, val, None
    if len(train) == 0:
        raise ForgeError(
            f"Cut to model.max_length {max_length} tokens, no training example keeps any answer token.",
            fix="Raise model.max_length in the run's config.yaml (or forge.yaml, then `forge prepare FILE`), "
            "or free memory another way (smaller micro_batch_size, method: lora).",
            code=ErrorCode.NO_TRAINED_TOKENS,
            data={"split": "train", "max_length": max_length},
        )
    return train, val, cut


def epoch_order(split: TokenizedSplit, seed: int, epoch: int, max_length: int) -> list[np.ndarray]:
    """The rows of one epoch: a seeded permutation, arranged into rows that fit ``max_length``.

    Packed and padded runs meet examples in the same order (the flattened rows), so the data position
    means the same in both.
    """
    permutation = np.random.default_rng([seed, epoch]).permutation(len(split))
    return arrange_rows(permutation, split.lengths, max_length, seed + epoch)


class MicroBatches:
    """An endless stream of micro-batches starting at a data position, epoch after epoch."""

    def __init__(
        self,
        split: TokenizedSplit,
        *,
        seed: int,
        max_length: int,
        micro_batch_size: int,
        packing: bool,
        pad_id: int,
        mask_dtype=None,
    ) -> None:
        self.split, self.seed, self.max_length = split, seed, max_length
        self.micro_batch_size, self.packing, self.pad_id = micro_batch_size, packing, pad_id
        self.mask_dtype = mask_dtype
        self._rows_cache: tuple[int, list[np.ndarray]] | None = None

    def rows(self, epoch: int) -> list[np.ndarray]:
        if self._rows_cache is None or self._rows_cache[0] != epoch:
            self._rows_cache = (epoch, epoch_order(self.split, self.seed, epoch, self.max_length))
        return self._rows_cache[1]

    def batches_per_epoch(self, epoch: int = 0) -> int:
        units = len(self.rows(epoch)) if self.packing else len(self.split)
        return -(-units // self.micro_batch_size)

    def stream(self, position: DataPosition) -> Iterator[tuple[Batch, DataPosition]]:
        """(micro-batch, position after it); an epoch's last micro-batch may be smaller."""
        epoch, index = position.epoch, position.index
        while True:
            groups = self._groups(self.rows(epoch), index)
            for group in groups:
                index += sum(len(row) for row in group)
                yield self._collate(group), DataPosition(epoch, index)
            epoch, index = epoch + 1, 0

    def _groups(self, rows: list[np.ndarray], start: int) -> list[list[np.ndarray]]:
        """Micro-batches (lists of rows) of the rest of an epoch from example ``start`` on."""
        flat = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        if not self.packing:
            rest = flat[start:]
            return [[rest[i : i + self.micro_batch_size]] for i in range(0, len(rest), self.micro_batch_size)]
        bounds = np.cumsum([0] + [len(row) for row in rows])
        first = int(np.searchsorted(bounds, start, side="right")) - 1
        remaining = list(rows[first + 1 :]) if first < len(rows) else []
        if first < len(rows):  # a position inside a row (e.g. after an unpacked attempt): its tail
            remaining.insert(0, rows[first][start - bounds[first] :])
        remaining = [row for row in remaining if len(row)]
        size = self.micro_batch_size
        return [remaining[i : i + size] for i in range(0, len(remaining), size)]

    def _collate(self, group: list[np.ndarray]) -> Batch:
        if not self.packing:
            examples = [self.split.example(int(i)) for i in group[0]]
            return collate_padded([e[0] for e in examples], [e[1] for e in examples], self.pad_id)
        rows = [[self.split.example(int(i)) for i in row] for row in group]
        return collate_packed(rows, self.pad_id, mask_dtype=self.mask_dtype)


def evaluation_batches(
    split: TokenizedSplit, *, max_length: int, micro_batch_size: int, packing: bool, pad_id: int, mask_dtype=None
) -> Iterator[Batch]:
    """Every validation example once (seeded order, so each evaluation sees the same batches)."""
    if len(split) == 0:
        return
    stream = MicroBatches(
        split,
        seed=0,
        max_length=max_length,
        micro_batch_size=micro_batch_size,
        packing=packing,
        pad_id=pad_id,
        mask_dtype=mask_dtype,
    )
    for batch, position in stream.stream(DataPosition()):
        yield batch
        if position.epoch > 0 or position.index >= len(split):
            return
