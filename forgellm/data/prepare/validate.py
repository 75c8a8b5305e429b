"""Checks on the finished output of `prepare`, before it gets its final name.

Each check reads the files as training will read them: JSON parses, text re-renders to the same
tokens, every example trains on something, answers end with a trained stop token, and no example
sits in two splits.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from forgellm.data.prepare.splits import SPLITS, content_key

if TYPE_CHECKING:
    from forgellm.templates.messages import ChatFormat

SAMPLE_PER_SPLIT = 25
_BATCH_ROWS = 4096  # rows per batch when scanning tokenized splits: bounded memory whatever their size


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stop_ids(chat_format: ChatFormat, tokenizer: Any) -> set[int]:
    ids = set()
    for marker in chat_format.stop_markers:
        encoded = tokenizer(marker, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1:
            ids.add(encoded[0])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def validate_outputs(
    folder: Path, *, cpt: bool, max_length: int, chat_format: ChatFormat, tokenizer: Any
) -> list[Check]:
    checks = _json_counts_and_leakage(folder)
    checks.insert(1, _trained_tokens(folder, cpt, max_length, _stop_ids(chat_format, tokenizer) if not cpt else set()))
    if not cpt:
        checks.insert(2, _rerender(folder, chat_format, tokenizer))
    return checks


def _json_counts_and_leakage(folder: Path) -> list[Check]:
    """One pass over the JSON lines: each parses, counts match the tokenized rows, no example in two splits."""
    problems = []
    path = folder / "leakage-check.sqlite.tmp"  # on disk: memory stays bounded for any output size
    path.unlink(missing_ok=True)
    db = sqlite3.connect(str(path))
    db.execute("CREATE TABLE seen (key INTEGER, split INTEGER)")
    for code, split in enumerate(SPLITS):
        count, keys = 0, []
        with open(folder / f"{split}.jsonl", "rb") as handle:
            for number, line in enumerate(handle, 1):
                count += 1
                try:
                    keys.append((content_key(orjson.loads(line)["text"]), code))
                except (json.JSONDecodeError, KeyError, TypeError) as exc:  # orjson's error is a JSONDecodeError
                    problems.append(f"{split}.jsonl line {number}: {exc}")
                if len(keys) >= 10_000:
                    db.executemany("INSERT INTO seen VALUES (?, ?)", keys)
                    keys = []
        db.executemany("INSERT INTO seen VALUES (?, ?)", keys)
        rows = pq.ParquetFile(folder / f"{split}.parquet").metadata.num_rows
        if rows != count:
            problems.append(f"{split}: {count} JSON rows but {rows} tokenized rows")
    leaked = db.execute(
        "SELECT COUNT(*) FROM (SELECT key FROM seen GROUP BY key HAVING COUNT(DISTINCT split) > 1)"
    ).fetchone()[0]
    db.close()
    path.unlink(missing_ok=True)
    return [
        Check("valid JSON, text and tokens aligned", not problems, "; ".join(problems[:5]) or "all splits"),
        Check("no example in two splits", leaked == 0, f"{leaked} examples appear in more than one split"),
    ]


def _last_trained(labels: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the number of trained tokens and the id of the last trained token (-1 where none)."""
    flat = pc.list_flatten(labels).to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(labels).to_numpy(zero_copy_only=False)
    rows = len(labels)
    trained_at = np.nonzero(flat != -100)[0]
    owners = parents[trained_at]
    counts = np.bincount(owners, minlength=rows)
    last_id = np.full(rows, -1, dtype=np.int64)
    if len(trained_at):
        is_last = np.r_[owners[1:] != owners[:-1], True]  # rows are contiguous in the flat array
        last_id[owners[is_last]] = flat[trained_at[is_last]]
    return counts, last_id


def _count_batch(
    batch: pa.RecordBatch, cpt: bool, max_length: int, stop_ids: set[int], totals: tuple[int, int, int]
) -> tuple[int, int, int]:
    empty, no_stop, cut = totals
    counts, last_id = _last_trained(batch.column("labels"))
    lengths = batch.column("length").to_numpy()
    empty += int((counts == 0).sum())
    if not cpt:
        # A row cut at max_length may lose its stop token; that is reported, not a failure.
        missing = (counts > 0) & ~np.isin(last_id, list(stop_ids))
        cut += int((missing & (lengths >= max_length)).sum())
        no_stop += int((missing & (lengths < max_length)).sum())
    return empty, no_stop, cut


def _open_unbuffered(path: Path) -> pq.ParquetFile:
    # pre_buffer (pyarrow's default) coalesces reads ahead of the scan, and the buffers it keeps grow
    # with the file: measured +38 MB peak per 2x output. Without it the scan's peak stays flat.
    return pq.ParquetFile(path, pre_buffer=False)


def _trained_tokens(folder: Path, cpt: bool, max_length: int, stop_ids: set[int]) -> Check:
    empty = no_stop = cut = 0
    for split in SPLITS:
        # Batch by batch: the tokenized split can be far larger than memory.
        parquet = _open_unbuffered(folder / f"{split}.parquet")
        for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=["labels", "length"], use_threads=False):
            empty, no_stop, cut = _count_batch(batch, cpt, max_length, stop_ids, (empty, no_stop, cut))
    ok = empty == 0 and no_stop == 0

    detail = f"{empty} examples without trained tokens, {no_stop} answers whose stop token is not trained"
    if cut:
        detail += f" ({cut} truncated answers lost their stop token)"
    return Check("every example trains, answers end with a trained stop token", ok, detail)


def _rerender(folder: Path, chat_format: ChatFormat, tokenizer: Any) -> Check:
    mismatches = []
    for split in SPLITS:
        batches = _open_unbuffered(folder / f"{split}.parquet").iter_batches(SAMPLE_PER_SPLIT, columns=["input_ids"])
        first = next(batches, None)
        sample = first.column("input_ids").to_pylist() if first is not None else []
        with open(folder / f"{split}.jsonl", encoding="utf-8") as handle:
            for index, ids in enumerate(sample):
                row = json.loads(handle.readline())
                text = chat_format.render_text(row["messages"])
                fresh = tokenizer(text, add_special_tokens=False)["input_ids"]
                if text != row["text"] or fresh[: len(ids)] != ids:
                    mismatches.append(f"{split} row {index + 1} (input line {row['line']})")
    detail = ", ".join(mismatches[:5]) or f"first {SAMPLE_PER_SPLIT} rows of each split re-render identically"
    return Check("re-rendered text and tokens match", not mismatches, detail)
