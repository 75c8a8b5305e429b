"""Streamed readers: open any supported input once, describe it, then read it in bounded batches.

``open_dataset`` looks at the path (suffix, then content), decides the encoding and the dialect from a
sample, and raises a ForgeError for inputs that cannot be read. ``Dataset.batches`` re-reads the file
on every call, so the same sequence comes back each time and a resumed run can skip finished batches.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any, Literal

from forgellm.data.read import encoding as enc
from forgellm.data.read.encoding import count_lines_fast
from forgellm.data.read.json_lines import iter_json, iter_jsonl, jsonl_columns, sniff_json
from forgellm.data.read.records import BadRow, Record
from forgellm.data.read.tabular import (
    ReadCounts,
    iter_csv,
    iter_parquet,
    iter_texts,
    parquet_footer,
    sniff_dialect,
    spill_columns,
)
from forgellm.errors import ErrorCode, ForgeError

__all__ = ["Dataset", "DatasetInfo", "count_lines_fast", "estimate_rows", "open_dataset", "sample_records"]

Kind = Literal["csv", "tsv", "json", "jsonl", "parquet", "text"]
Item = Record | BadRow

_SUFFIX_KINDS: dict[str, Kind] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    **{s: "text" for s in (".txt", ".text", ".md", ".markdown", ".rst")},
}
TEXT_SUFFIXES = frozenset(s for s, k in _SUFFIX_KINDS.items() if k == "text")
# Licence, notice and read-me files sit beside documents in most repositories; they are not training text.
_SPILL_SAMPLE_ROWS = 20_000  # rows of the head sample (256 KB) that decide which columns are empty spill
_NOT_CONTENT = {
    **dict.fromkeys(("license", "licence", "copying", "notice"), "licence or notice file, not content"),
    "readme": "read-me file, not content",
}


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """What an input is and how it will be read; ``to_dict`` gives the same keys for every kind."""

    path: str
    kind: Kind
    kind_how: str  # "suffix .csv", "content", ...
    compressed: bool
    compression: str | None  # "gzip", "bzip2", "xz"
    encoding: str | None  # Python codec name; None for Parquet
    encoding_confidence: float | None  # 1.0 for a BOM, valid UTF-8 or a given codec
    encoding_how: str | None
    # A detected single-byte code page is applied per line, UTF-8 first (files that mix both: encoding.py).
    encoding_per_line: bool = False
    delimiter: str | None = None  # csv/tsv
    quotechar: str | None = None  # csv/tsv
    columns: tuple[str, ...] | None = None  # header, Parquet schema, keys of the first JSON record
    # csv/tsv: empty columns that trailing delimiters made (blank header, no values): read past, not in `columns`
    dropped_columns: tuple[str, ...] = ()
    header: tuple[str, ...] | None = None  # csv/tsv: every header cell, as named in `columns`
    json_key: str | None = None  # a JSON object's key whose array holds the records
    files: tuple[str, ...] = ()  # folder input: the documents read, relative, in reading order
    skipped: tuple[tuple[str, str], ...] = ()  # folder input: (relative name, why it is not read)
    size_bytes: int = 0  # on disk (compressed size for .gz; sum of read files for a folder)
    num_rows: int | None = None  # exact count where the format stores it (Parquet, folders)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["columns"] = list(self.columns) if self.columns is not None else None
        data["dropped_columns"] = list(self.dropped_columns)
        data["header"] = list(self.header) if self.header is not None else None
        data["files"] = list(self.files)
        data["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        return data


class Dataset:
    """An opened input. ``batches()`` streams it; call it again for the same sequence."""

    def __init__(self, info: DatasetInfo, batch_rows: int) -> None:
        if batch_rows < 1:
            raise ForgeError(
                f"batch_rows must be at least 1, got {batch_rows}.",
                fix="Use a positive batch size.",
                code=ErrorCode.USAGE_INVALID,
            )
        self.info = info
        self.batch_rows = batch_rows
        self._replacements = enc.ReplacementCounter()
        self._counts = ReadCounts()

    @property
    def counts(self) -> ReadCounts:
        """Blank rows skipped and rows trimmed by the latest pass (complete once a pass has read to the end)."""
        return self._counts

    def reading(self) -> dict[str, Any]:
        """How the file was read and what reading skipped or repaired, for the study report and prepare stats."""
        info = self.info
        return {
            "kind": info.kind,
            "encoding": info.encoding,
            "encoding_how": info.encoding_how,
            "dropped_columns": list(info.dropped_columns),
            "blank_rows": self._counts.blank_rows,
            "trimmed_rows": self._counts.trimmed_rows,
            "replaced_chars": self.replaced_chars,
        }

    @property
    def replaced_chars(self) -> int:
        """Undecodable bytes replaced by U+FFFD so far (0 when the detected encoding held everywhere)."""
        return self._replacements.count

    def batches(self, start_batch: int = 0) -> Iterator[list[Item]]:
        """Lists of at most ``batch_rows`` records/bad rows in file order, skipping the first ``start_batch``."""
        items = self._items()
        try:
            index = 0
            while batch := list(islice(items, self.batch_rows)):
                if index >= start_batch:
                    yield batch
                index += 1
        finally:
            items.close()

    def __iter__(self) -> Iterator[Item]:
        for batch in self.batches():
            yield from batch

    def _items(self) -> Iterator[Item]:
        info, path = self.info, Path(self.info.path)
        if info.kind == "parquet":
            yield from iter_parquet(path)
            return
        compression = enc.COMPRESSIONS_BY_NAME[info.compression] if info.compression else None
        if info.kind == "text":
            if info.files:
                yield from iter_texts(path, info.files, info.encoding, self._replacements.name)
            else:
                yield from iter_texts(path.parent, (path.name,), info.encoding, self._replacements.name, compression)
            return
        codec, per_line = info.encoding or "utf-8", info.encoding_per_line
        with enc.open_text(path, compression, codec, self._replacements.name, per_line=per_line) as stream:
            if info.kind in ("csv", "tsv"):
                self._counts = ReadCounts()  # each pass counts afresh: the last complete one is the file's
                yield from iter_csv(
                    stream,
                    path.name,
                    info.delimiter or ",",
                    info.quotechar or '"',
                    info.header or info.columns,
                    info.dropped_columns,
                    self._counts,
                )
            elif info.kind == "jsonl":
                yield from iter_jsonl(stream, path.name)
            else:
                yield from iter_json(stream, path.name, info.json_key)


def open_dataset(path: str | os.PathLike[str], *, batch_rows: int = 2000, encoding: str | None = None) -> Dataset:
    """Open a CSV/TSV/JSON/JSONL/Parquet file (optionally .gz/.bz2/.xz), a .txt/.md file or a folder of them."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ForgeError(
            f"No such file or folder: {p}",
            fix=f"Check the path (relative paths start from {Path.cwd()}).",
            code=ErrorCode.FILE_NOT_FOUND,
            data={"path": str(p)},
        )
    try:
        info = _folder_info(p, encoding) if p.is_dir() else _file_info(p, encoding)
    except PermissionError as e:
        raise ForgeError(
            f"Cannot read {e.filename or p}: permission denied.",
            fix="Check the file's permissions.",
            code=ErrorCode.FILE_UNREADABLE,
        ) from e
    return Dataset(info, batch_rows)


def sample_records(dataset: Dataset, n: int = 1000) -> list[Record]:
    """The first ``n`` good records (bad rows skipped), reading no further than needed."""
    records: list[Record] = []
    for batch in dataset.batches():
        records.extend(r for r in batch if isinstance(r, Record))
        if len(records) >= n:
            break
    return records[:n]


def estimate_rows(dataset: Dataset, sample: int = 2000) -> int | None:
    """A cheap estimate of the number of records, for progress bars: exact for Parquet and folders.

    Otherwise the file's line count (a fast byte scan) divided by the lines per record of a sample.
    """
    info = dataset.info
    if info.num_rows is not None:
        return info.num_rows
    if info.kind == "text":
        return 1
    lines_seen, records = 0, 0
    for item in dataset:
        records += 1
        lines_seen = item.line
        if records >= sample:
            break
    total = count_lines_fast(info.path)
    if records < sample or lines_seen == 0:
        return records
    return max(records, round(total * records / lines_seen))


def _file_info(p: Path, encoding: str | None) -> DatasetInfo:
    size = p.stat().st_size
    if size == 0:
        raise _empty(p, "is empty (0 bytes)")
    compression = enc.compression_of(p)
    inner = Path(p.stem) if p.suffix.lower() in enc.COMPRESSIONS else p
    kind: Kind | None = _SUFFIX_KINDS.get(inner.suffix.lower())
    kind_how = f"suffix {inner.suffix.lower()}" if kind else "content"
    if kind == "parquet" and compression:
        raise ForgeError(
            f"{p.name} is a compressed Parquet file; Parquet compresses inside the file already.",
            fix=f"Decompress it first (e.g. `gunzip {p.name}`).",
            code=ErrorCode.DATA_FORMAT_INVALID,
        )
    sample, whole = enc.read_sample(p, compression)
    if kind is None and compression is None and sample.startswith(b"PAR1"):
        kind = "parquet"
    if kind == "parquet":
        columns, num_rows = parquet_footer(p)
        return DatasetInfo(
            path=str(p.resolve()),
            kind="parquet",
            kind_how=kind_how,
            compressed=False,
            compression=None,
            encoding=None,
            encoding_confidence=None,
            encoding_how=None,
            columns=columns,
            size_bytes=size,
            num_rows=num_rows,
        )
    what = enc.binary_kind(sample)
    if what:
        hint = "rename it to .parquet" if what == "a Parquet file" else "export the data as CSV (UTF-8) or JSONL"
        raise ForgeError(
            f"{p.name} looks like a binary file, not text: it is {what}.",
            fix=f"Check the file; {hint}.",
            code=ErrorCode.DATA_FORMAT_INVALID,
        )
    guess = (
        enc.given_encoding(encoding, sample)
        if encoding
        else enc.detect_encoding(sample, enc.probe_bytes(p, compression, sample), name=p.name)
    )
    per_line = encoding is None and enc.per_line_decoding(guess)
    if per_line:
        how = f"{guess.how}; per line: UTF-8 where a line is valid UTF-8, else {guess.encoding}"
        guess = enc.EncodingGuess(guess.encoding, guess.confidence, how)
        text = enc.decode_per_line(sample, guess.encoding)
    else:
        text = codecs.getincrementaldecoder(guess.encoding)(errors="replace").decode(sample, final=whole)
    if whole and not text.strip():
        raise _empty(p, "contains only whitespace")
    if kind is None:
        kind = _sniff_kind(text)
    base = DatasetInfo(
        path=str(p.resolve()),
        kind=kind,
        kind_how=kind_how,
        compressed=compression is not None,
        compression=enc.COMPRESSIONS[compression][0] if compression else None,
        encoding=guess.encoding,
        encoding_confidence=guess.confidence,
        encoding_how=guess.how,
        encoding_per_line=per_line,
        size_bytes=size,
        num_rows=1 if kind == "text" else None,
    )
    if kind in ("csv", "tsv"):
        return _csv_info(base, text, whole, p.name)
    if kind == "json":
        found, key, columns = sniff_json(text, whole, p.name)
        how = kind_how if found == "json" or kind_how == "content" else f"content: JSON Lines in a {inner.suffix} file"
        return replace(base, kind=found, kind_how=how, json_key=key, columns=_tuple(columns))
    if kind == "jsonl":
        return replace(base, columns=_tuple(jsonl_columns(text)))
    return replace(base, columns=("text", "path"))


def _csv_info(base: DatasetInfo, text: str, whole: bool, name: str) -> DatasetInfo:
    if not whole:  # parse complete lines only
        text = text[: text.rfind("\n") + 1] or text
    delimiter, quotechar = sniff_dialect(text, "\t" if base.kind == "tsv" else None)
    # newline="": CR-only and CRLF files split into rows as the csv module does when reading them for real.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar=quotechar, doublequote=True)
    try:
        header = next(row for row in reader if any(cell.strip() for cell in row))
        # Every row of the head sample: thousands of blank rows may come before the first data row.
        rows = list(islice(reader, _SPILL_SAMPLE_ROWS))
        has_rows = any(any(cell.strip() for cell in row) for row in rows)
    except csv.Error as e:
        raise ForgeError(
            f"{name}: cannot read the CSV header: {e}.",
            fix="Check the first line of the file.",
            code=ErrorCode.DATA_FORMAT_INVALID,
        ) from e
    except StopIteration:
        header, rows, has_rows = [], [], False
    if whole and not has_rows:
        raise ForgeError(
            f"{name} has a header but no rows (columns: {', '.join(header)}).",
            fix="Add data rows below the header line, or check that the right file or sheet was exported.",
            code=ErrorCode.DATA_EMPTY,
        )
    names = unique_columns(header)
    dropped = spill_columns(header, names, rows)
    return replace(
        base,
        delimiter=delimiter,
        quotechar=quotechar,
        columns=tuple(n for n in names if n not in dropped),
        dropped_columns=dropped,
        header=tuple(names),
    )


def unique_columns(header: list[str]) -> list[str]:
    """Header names made usable as keys: blanks become column_N, repeats get _2, _3."""
    seen: dict[str, int] = {}
    names = []
    for i, raw in enumerate(header, 1):
        name = raw.strip() or f"column_{i}"
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        seen.setdefault(name, 1)
        names.append(name)
    return names


def _sniff_kind(text: str) -> Kind:
    stripped = text.lstrip()
    if stripped.startswith("["):
        return "json"
    if stripped.startswith("{"):
        return "json"  # sniff_json tells JSON Lines apart
    delimiter, _ = sniff_dialect(text, None, strict=True)
    if delimiter == "\t":
        return "tsv"
    return "csv" if delimiter else "text"


def _folder_info(p: Path, encoding: str | None) -> DatasetInfo:
    files, skipped, size = [], [], 0
    for path in sorted(p.rglob("*"), key=lambda q: q.relative_to(p).as_posix()):
        rel = path.relative_to(p).as_posix()
        if path.is_dir():
            continue
        reason = _skip_reason(path, rel)
        if reason:
            skipped.append((rel, reason))
        else:
            files.append(rel)
            size += path.stat().st_size
    if not files:
        raise ForgeError(
            f"The folder {p} has no readable text files (.txt, .md, .markdown, .rst).",
            fix="Put the documents in that folder as .txt or .md files, or give the path of a data file "
            "(CSV, JSON, JSONL or Parquet) instead of the folder.",
            details=[f"{name}: {reason}" for name, reason in skipped[:10]],
            code=ErrorCode.DATA_EMPTY,
        )
    how = "detected per file"
    if encoding:
        how = f"given ({enc.check_encoding_name(encoding)})"
    return DatasetInfo(
        path=str(p.resolve()),
        kind="text",
        kind_how="folder of documents",
        compressed=False,
        compression=None,
        encoding=enc.check_encoding_name(encoding) if encoding else None,
        encoding_confidence=None,
        encoding_how=how,
        columns=("text", "path"),
        files=tuple(files),
        skipped=tuple(skipped),
        size_bytes=size,
        num_rows=len(files),
    )


def _skip_reason(path: Path, rel: str) -> str | None:
    if any(part.startswith(".") for part in rel.split("/")):
        return "hidden"
    if not path.is_file():
        return "not a regular file"
    stem = path.name.lower().split(".")[0]
    if stem in _NOT_CONTENT:
        return _NOT_CONTENT[stem]
    if path.suffix.lower() not in TEXT_SUFFIXES:
        return "not a text document (.txt/.md/.markdown/.rst)"
    if path.stat().st_size == 0:
        return "empty file"
    return None


def _tuple(columns: list[str] | None) -> tuple[str, ...] | None:
    return tuple(columns) if columns is not None else None


def _empty(p: Path, what: str) -> ForgeError:
    return ForgeError(
        f"{p.name} {what}: there is nothing to read.",
        fix="Check that the right file was exported.",
        code=ErrorCode.DATA_EMPTY,
    )
