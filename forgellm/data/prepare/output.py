"""The end of `prepare`: chunk files -> final splits (text + tokenized), rejects, and validation.

Final files are written under temporary names in the work folder and only the finished folder is
renamed to its fingerprint, so a reader never sees half an output.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from forgellm.config.schema import ForgeConfig
from forgellm.data.prepare.mixture import MixturePlan, Selection, rank
from forgellm.data.prepare.splits import SPLITS, hash_unit, temporal_cutoffs, temporal_split
from forgellm.data.read.records import reason_kind
from forgellm.errors import ErrorCode, ForgeError
from forgellm.project.layout import PreparedLayout

TOKEN_SCHEMA = pa.schema(
    [
        ("line", pa.int64()),
        ("split", pa.string()),
        ("key", pa.int64()),
        ("label", pa.string()),
        ("date", pa.float64()),
        ("duplicate", pa.bool_()),
        ("source", pa.string()),  # a mixture's source name (the file's name, or "", for one data.source)
        ("input_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int32())),
        ("length", pa.int32()),
    ]
)
FINAL_COLUMNS = ["line", "input_ids", "labels", "length"]
FINAL_SCHEMA = pa.schema([TOKEN_SCHEMA.field(name) for name in FINAL_COLUMNS])
# Chunk files live minutes and are read once by the merge: plain encoding writes ~4x and reads ~7x faster
# than Parquet's default dictionary + snappy (token ids barely compress anyway).
_CHUNK_PARQUET = {"compression": "none", "use_dictionary": False}
# Final splits: zstd without dictionaries is as fast to write as the default and ~2.5x faster to read
# (validation and every training run read them), and the files are smaller (measured on 50k rows).
_FINAL_PARQUET = {"compression": "zstd", "use_dictionary": False}


def json_line(value: Any) -> bytes:
    """One JSON Lines record (UTF-8, no ASCII escaping), as every prepared .jsonl file is written."""
    try:
        return orjson.dumps(value) + b"\n"
    except TypeError:  # what orjson refuses (e.g. an integer beyond 64 bits in a tool call) the stdlib writes
        return json.dumps(value, ensure_ascii=False).encode("utf-8") + b"\n"


def chunk_paths(work: Path, number: int) -> dict[str, Path]:
    stem = work / "chunks" / f"{number:06d}"
    return {
        "rows": stem.with_suffix(".jsonl"),
        "tokens": stem.with_suffix(".parquet"),
        "rejects": Path(f"{stem}.rejects.jsonl"),
    }


def _rejects_tmp(work: Path) -> Path:
    """rejects.jsonl while the merge appends to it; renamed when complete."""
    rejects = PreparedLayout(work).rejects
    return rejects.with_name(rejects.name + ".tmp")


def write_chunk(work: Path, number: int, rows: list[dict], tokens: list[dict], rejects: list[dict]) -> dict[str, dict]:
    """Write one finished chunk, each file by temp name + rename; returns each file's size and SHA-256,
    which the manifest records so a resumed run can tell a finished chunk from a damaged one."""
    paths = chunk_paths(work, number)
    paths["rows"].parent.mkdir(parents=True, exist_ok=True)
    written = {"rows": _write_jsonl(paths["rows"], rows), "rejects": _write_jsonl(paths["rejects"], rejects)}
    tmp = paths["tokens"].with_name(paths["tokens"].name + ".tmp")
    pq.write_table(_token_table(tokens), tmp, **_CHUNK_PARQUET)
    written["tokens"] = file_record(tmp)
    tmp.replace(paths["tokens"])
    return written


def file_record(path: Path) -> dict[str, Any]:
    """{bytes, sha256} of a file as it is on disk."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
            size += len(block)
    return {"bytes": size, "sha256": digest.hexdigest()}


def chunk_damage(work: Path, number: int, recorded: dict[str, dict] | None) -> str | None:
    """Why chunk `number`'s files cannot be trusted (missing, another size, another checksum), or None when
    every file is as recorded. A chunk recorded without checksums (an older Forge) cannot be verified."""
    if not recorded:
        return "no checksums were recorded for it"
    for kind, path in chunk_paths(work, number).items():
        expected = recorded.get(kind)
        if expected is None:
            return f"no checksum was recorded for {path.name}"
        if not path.is_file():
            return f"{path.name} is missing"
        size = path.stat().st_size
        if size != expected["bytes"]:
            return f"{path.name} has {size:,} bytes, {expected['bytes']:,} were written"
        if file_record(path)["sha256"] != expected["sha256"]:
            return f"{path.name} does not match its checksum"
    return None


def _id_lists(lists: list[list[int]]) -> pa.ListArray:
    """Lists of token ids -> an Arrow list array, built from one flat buffer (far faster than per item)."""
    lengths = np.fromiter((len(x) for x in lists), dtype=np.int32, count=len(lists))
    offsets = np.zeros(len(lists) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int32, count=int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def _token_table(tokens: list[dict]) -> pa.Table:
    columns = {}
    for spec in TOKEN_SCHEMA:
        values = [t[spec.name] for t in tokens]
        columns[spec.name] = _id_lists(values) if spec.name in ("input_ids", "labels") else pa.array(values, spec.type)
    return pa.table(columns, schema=TOKEN_SCHEMA)


def _write_jsonl(path: Path, rows: list[dict]) -> dict[str, Any]:
    data = b"".join(json_line(row) for row in rows)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
    tmp.replace(path)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@dataclass
class SplitPlan:
    """Decisions that need the whole data set: temporal cut-offs and balanced sampling."""

    cutoffs: tuple[float, float] | None = None
    label_keep: dict[str, float] = field(default_factory=dict)  # label -> keep probability in train
    dup_first_split: dict[int, str] = field(default_factory=dict)


def plan_splits(work: Path, chunks: int, config: ForgeConfig) -> SplitPlan:
    """First pass over the chunks' token metadata (small columns only)."""
    prep = config.preprocessing
    plan = SplitPlan()
    if prep.split.method != "temporal" and not prep.balance:
        return plan
    dates: list[float] = []
    train_labels: Counter = Counter()
    for number in range(chunks):
        meta = pq.read_table(chunk_paths(work, number)["tokens"], columns=["split", "label", "date", "duplicate"])
        for split, label, date, dup in zip(*(meta.column(c).to_pylist() for c in meta.column_names), strict=True):
            if date is not None and not dup:
                dates.append(date)
            if split == "train" or prep.split.method == "temporal":
                train_labels[label] += 1
    if prep.split.method == "temporal":
        plan.cutoffs = temporal_cutoffs(dates, (prep.split.train, prep.split.val, prep.split.test))
        if prep.balance:  # label counts of train are only known once dates are placed
            train_labels = _temporal_train_labels(work, chunks, plan.cutoffs)
    if prep.balance:
        labelled = {label: n for label, n in train_labels.items() if label is not None}
        if len(labelled) < 2:
            raise ForgeError(
                "preprocessing.balance needs a label column with at least two labels.",
                fix="Set data.recipe.columns.label to the category column, or set preprocessing.balance: false.",
                code=ErrorCode.CONFIG_INVALID,
            )
        cap = statistics.median(labelled.values())
        plan.label_keep = {label: min(1.0, cap / n) for label, n in labelled.items()}
    return plan


def _temporal_train_labels(work: Path, chunks: int, cutoffs: tuple[float, float]) -> Counter:
    counts: Counter = Counter()
    for number in range(chunks):
        meta = pq.read_table(chunk_paths(work, number)["tokens"], columns=["label", "date"])
        for label, date in zip(meta.column("label").to_pylist(), meta.column("date").to_pylist(), strict=True):
            if date is not None and temporal_split(date, cutoffs) == "train":
                counts[label] += 1
    return counts


def final_splits(meta: pa.Table, plan: SplitPlan, config: ForgeConfig) -> tuple[list[str | None], dict[int, str]]:
    """Final split of every row of a chunk (None = rejected) and the reject reasons by row index."""
    splits = meta.column("split").to_pylist()
    if plan.cutoffs is None and not plan.label_keep:
        return splits, {}
    reasons: dict[int, str] = {}
    columns = [meta.column(c).to_pylist() for c in ("key", "label", "date", "duplicate")]
    for index, (key, label, date, duplicate) in enumerate(zip(*columns, strict=True)):
        split = splits[index]
        if plan.cutoffs is not None and split is None:  # a synthetic row is in train already (splits.py)
            if duplicate and key in plan.dup_first_split:
                split = plan.dup_first_split[key]
            elif date is None:
                reasons[index] = f"no readable date in column '{config.preprocessing.split.column}' (temporal split)"
                split = None
            else:
                split = temporal_split(date, plan.cutoffs)
                plan.dup_first_split.setdefault(key, split)
        keep = plan.label_keep.get(label) if split == "train" else None
        if keep is not None and keep < 1.0 and hash_unit(key, config.preprocessing.seed + 1) >= keep:
            reasons[index] = f"balanced sampling: label '{label}' is over-represented in train"
            split = None
        splits[index] = split
    return splits, reasons


@dataclass
class SplitWriter:
    """Final <split>.jsonl and <split>.parquet, written under temp names."""

    folder: Path
    handles: dict[str, Any] = field(default_factory=dict)
    writers: dict[str, pq.ParquetWriter] = field(default_factory=dict)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)

    def open(self) -> None:
        for split in SPLITS:
            self.handles[split] = open(self.folder / f"{split}.jsonl.tmp", "wb")
            self.writers[split] = pq.ParquetWriter(self.folder / f"{split}.parquet.tmp", FINAL_SCHEMA, **_FINAL_PARQUET)
            self.stats[split] = {"examples": 0, "tokens": 0, "trained_tokens": 0, "max_length": 0}

    def add(self, split: str, lines: list[bytes], table: pa.Table) -> None:
        if not lines:
            return
        self.handles[split].writelines(lines)
        self.writers[split].write_table(table.select(FINAL_COLUMNS))
        stats = self.stats[split]
        labels = pc.list_flatten(table.column("labels"))
        stats["examples"] += len(lines)
        stats["tokens"] += int(pc.sum(table.column("length")).as_py() or 0)
        stats["trained_tokens"] += int(pc.sum(pc.not_equal(labels, -100)).as_py() or 0)
        stats["max_length"] = max(stats["max_length"], int(pc.max(table.column("length")).as_py() or 0))

    def close(self) -> None:
        for split in SPLITS:
            self.handles[split].close()
            self.writers[split].close()
            for suffix in ("jsonl", "parquet"):
                (self.folder / f"{split}.{suffix}.tmp").replace(self.folder / f"{split}.{suffix}")

    def abort(self) -> None:
        for handle in self.handles.values():
            handle.close()
        for writer in self.writers.values():
            writer.close()
        for tmp in self.folder.glob("*.tmp"):
            tmp.unlink(missing_ok=True)


def merge_chunks(
    work: Path, chunks: int, config: ForgeConfig, mixture: MixturePlan | None = None
) -> tuple[dict[str, Any], Counter]:
    """Route every kept row to its final split; append merge-stage rejects. Returns split stats, reasons.
    With a mixture, a first pass ranks the rows and only those its rule selects are written (the others
    are not rejects: they are simply not used)."""
    plan = plan_splits(work, chunks, config)
    if mixture is not None:
        mixture.choose(_mixture_ranks(work, chunks, plan, config, mixture.seed))
    writer = SplitWriter(work)
    writer.open()
    reasons: Counter = Counter()
    try:
        with open(_rejects_tmp(work), "wb") as rejects:
            for number in range(chunks):
                paths = chunk_paths(work, number)
                with open(paths["rejects"], "rb") as chunk_rejects:
                    rejects.writelines(chunk_rejects)
                table = pq.read_table(paths["tokens"])
                splits, merge_rejects = final_splits(table.drop_columns(["input_ids", "labels"]), plan, config)
                if mixture is not None and mixture.selection is not None:
                    splits = _selected(mixture.selection, table, splits, mixture.seed)
                with open(paths["rows"], "rb") as handle:
                    lines = handle.readlines()
                for index, reason in merge_rejects.items():
                    row = orjson.loads(lines[index])
                    reasons[reason_kind(reason)] += 1
                    reject = {
                        "line": row["line"],
                        "source": row.get("source", ""),
                        "reason": reason,
                        "excerpt": row["text"][:160],
                    }
                    rejects.write(json_line(reject))
                _route(writer, table, lines, splits)
        writer.close()
        _rejects_tmp(work).replace(PreparedLayout(work).rejects)
    except BaseException:
        writer.abort()
        raise
    return writer.stats, reasons


_RANK_COLUMNS = ["split", "key", "label", "date", "duplicate", "source"]


def _mixture_ranks(
    work: Path, chunks: int, plan: SplitPlan, config: ForgeConfig, seed: int
) -> dict[tuple[str, str], np.ndarray]:
    """Every kept row's rank, by (source, final split), in stream order: small columns only."""
    parts: dict[tuple[str, str], list[np.ndarray]] = {}
    for number in range(chunks):
        meta = pq.read_table(chunk_paths(work, number)["tokens"], columns=_RANK_COLUMNS)
        splits, _ = final_splits(meta, plan, config)
        ranks = rank(meta.column("key").to_numpy(), seed)
        sources = np.array(meta.column("source").to_pylist(), dtype=object)
        split_array = np.array(splits, dtype=object)
        for group in set(zip(sources.tolist(), splits, strict=True)):
            if group[1] is not None:
                parts.setdefault(group, []).append(ranks[(sources == group[0]) & (split_array == group[1])])
    return {group: np.concatenate(values) for group, values in parts.items()}


def _selected(selection: Selection, table: pa.Table, splits: list[str | None], seed: int) -> list[str | None]:
    """The chunk's splits with the rows the mixture does not use set to None (in stream order, as ranked)."""
    ranks = rank(table.column("key").to_numpy(), seed).tolist()
    sources = table.column("source").to_pylist()
    return [
        split if split is not None and selection.keep(source, split, r) else None
        for split, source, r in zip(splits, sources, ranks, strict=True)
    ]


def _route(writer: SplitWriter, table: pa.Table, lines: list[bytes], splits: list[str | None]) -> None:
    """Send each row (JSON line + tokens) to its split; a row whose split changed gets its JSON rewritten."""
    chunk_splits = table.column("split").to_pylist()
    for split in SPLITS:
        chosen = [i for i, s in enumerate(splits) if s == split]
        if not chosen:
            continue
        out = []
        for i in chosen:
            if chunk_splits[i] == split:
                out.append(lines[i])  # unchanged: the line already says this split
            else:
                out.append(json_line({**orjson.loads(lines[i]), "split": split}))
        writer.add(split, out, table.take(pa.array(chosen, type=pa.int64())))
