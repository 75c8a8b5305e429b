"""CSV/TSV, Parquet and plain-text documents as streams of Records and BadRows."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import IO

from forgellm.data.read import encoding as enc
from forgellm.data.read.records import BadRow, Record
from forgellm.errors import ErrorCode, ForgeError

_DELIMITERS = ",;\t|"
_SNIFF_CHARS = 8 * 1024  # csv.Sniffer turns quadratic on some inputs: 1 s for 32 KB of multi-line cells
_FIELD_LIMIT = 256 * 1024 * 1024  # the csv default (128 KB) refuses long cells; this still stops a runaway quote
_EXCERPT_CHARS = 200
_PARQUET_BATCH = 8192


def sniff_dialect(text: str, delimiter: str | None, *, strict: bool = False) -> tuple[str | None, str]:
    """(delimiter, quote character) from the head of a file: csv.Sniffer, checked against the header line.

    Falls back to the most frequent candidate in the header, then ','. With ``strict`` the delimiter is
    None unless the head really looks like a table (for files whose suffix says nothing).
    """
    sample = text[:_SNIFF_CHARS]
    sample = sample[: sample.rfind("\n") + 1] or sample
    quotechar = '"'
    if delimiter is None:
        header = sample.lstrip("\r\n").split("\n", 1)[0]
        try:
            dialect = csv.Sniffer().sniff(sample, delimiters=_DELIMITERS)
            delimiter = dialect.delimiter
            if dialect.quotechar == "'" and '"' not in sample:
                quotechar = "'"
        except csv.Error:
            delimiter = None
        if delimiter is None or delimiter not in header:
            counts = {d: header.count(d) for d in _DELIMITERS}
            best = max(counts, key=lambda d: counts[d])
            delimiter = best if counts[best] else None
    if strict and (delimiter is None or not _looks_tabular(sample, delimiter, quotechar)):
        return None, quotechar
    return delimiter or ",", quotechar


def _looks_tabular(sample: str, delimiter: str, quotechar: str) -> bool:
    """At least two rows, mostly with the header's number (>= 2) of cells."""
    reader = csv.reader(io.StringIO(sample), delimiter=delimiter, quotechar=quotechar)
    try:
        counts = [len(row) for row in islice(reader, 21) if row][:-1]  # the last row may be cut
    except csv.Error:
        return False
    return len(counts) >= 2 and counts[0] >= 2 and counts.count(counts[0]) >= 0.8 * len(counts)


@dataclass
class ReadCounts:
    """What a pass over a CSV/TSV file skipped or repaired, to report (study) and record (prepare stats)."""

    blank_rows: int = 0  # empty lines and rows of only delimiters/whitespace: skipped, not rejects
    trimmed_rows: int = 0  # rows with empty cells past the header's width (trailing commas): trimmed


# pandas writes an unnamed index or blank header cell as "Unnamed: 3"; unique_columns makes a blank one "column_4".
_SPILL_NAME = re.compile(r"(?:Unnamed: \d+(?:_level_\d+)?|column_\d+)")


def spill_columns(header: list[str], names: list[str], rows: list[list[str]]) -> tuple[str, ...]:
    """The columns that trailing delimiters made: blank (or pandas "Unnamed: N") header cell and no value in
    any sampled row. They are left out of the records; a real column with a blank header keeps its values."""
    if not any(not _blank(row) for row in rows):
        return ()
    spill = []
    for i, (raw, name) in enumerate(zip(header, names, strict=True)):
        if raw.strip() and not _SPILL_NAME.fullmatch(raw.strip()):
            continue
        if all(i >= len(row) or not row[i].strip() for row in rows):
            spill.append(name)
    return tuple(spill) if len(spill) < len(names) else ()


def _blank(row: list[str]) -> bool:
    """An empty line or a row of only delimiters and whitespace (map/any stop at the first real cell)."""
    return not any(map(str.strip, row))


def iter_csv(
    stream: IO[str],
    name: str,
    delimiter: str,
    quotechar: str,
    columns: tuple[str, ...] | None,
    dropped: tuple[str, ...] = (),
    counts: ReadCounts | None = None,
) -> Iterator[Record | BadRow]:
    """Rows as Records keyed by the header; the start line of each comes from ``reader.line_num``.

    ``columns`` is the whole header (named as `unique_columns` does) and ``dropped`` the spill columns left
    out of the records (`spill_columns`); a value that does turn up in one is kept, not lost. Blank rows are
    skipped and counted in ``counts``; empty cells past the header's width are trimmed (trailing commas).
    A row with another number of cells, or that the csv module rejects, becomes a BadRow.
    """
    counts = counts if counts is not None else ReadCounts()
    csv.field_size_limit(max(csv.field_size_limit(), _FIELD_LIMIT))
    reader = csv.reader(stream, delimiter=delimiter, quotechar=quotechar, doublequote=True, strict=False)
    header = next((row for row in reader if not _blank(row)), None)
    if header is None:
        return
    names = list(columns or header)
    width = len(names)
    if len(names) != len(header):  # columns from another head than this file's: name them from this header
        names = list(header)
    drop = [i for i, n in enumerate(names) if n in dropped]
    keep = [i for i in range(width) if i not in drop]
    # Short rows are fine when only spill columns are missing (a header with trailing commas, rows without).
    needed = keep[-1] + 1 if keep else width
    pick = itemgetter(*keep) if drop and len(keep) > 1 else None
    kept_names = [names[i] for i in keep]
    previous = reader.line_num  # the record after it starts on the next line
    while True:
        try:
            for row in reader:
                start, previous = previous + 1, reader.line_num
                if _blank(row):
                    counts.blank_rows += 1
                    continue
                if previous > start:  # a quoted cell spans lines: its CRLF / CR line ends become \n
                    row = [_one_newline(cell) for cell in row]
                if len(row) > width and _blank(row[width:]):
                    del row[width:]
                    counts.trimmed_rows += 1
                if len(row) == width and not drop:
                    yield Record(start, dict(zip(names, row)), name)  # noqa: B905 (width checked)
                elif needed <= len(row) <= width:
                    row += [""] * (width - len(row))
                    if any(row[i].strip() for i in drop):  # a spill column with a value after all: keep it
                        yield Record(start, dict(zip(names, row)), name)  # noqa: B905 (padded to width)
                    elif pick is not None:
                        yield Record(start, dict(zip(kept_names, pick(row))), name)  # noqa: B905
                    else:
                        yield Record(start, {kept_names[0]: row[keep[0]]} if keep else {}, name)
                else:
                    yield _ragged(row, width, start, previous, name, delimiter)
            return
        except csv.Error as e:
            yield BadRow(previous + 1, f"CSV error: {e}", name)
            previous = reader.line_num


def _one_newline(cell: str) -> str:
    return cell.replace("\r\n", "\n").replace("\r", "\n") if "\r" in cell else cell


def _ragged(row: list[str], width: int, start: int, end: int, name: str, delimiter: str) -> BadRow:
    reason = f"expected {width} cells, found {len(row)}"
    if end > start:
        reason += f" (the row spans lines {start}-{end}; a quote may be left open)"
    return BadRow(start, reason, name, delimiter.join(row)[:_EXCERPT_CHARS])


def parquet_footer(path: Path) -> tuple[tuple[str, ...], int]:
    """(column names, row count) of a Parquet file, from its footer, without reading rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise ForgeError(
            f"{path.name} is not a readable Parquet file ({e}).",
            fix="Check the file is complete; re-export it, or save the data as CSV or JSONL.",
            code=ErrorCode.DATA_FORMAT_INVALID,
        ) from e
    if meta.metadata.num_rows == 0:
        raise ForgeError(
            f"{path.name} is a Parquet file with no rows.",
            fix="Check that the right data was exported.",
            code=ErrorCode.DATA_EMPTY,
        )
    return tuple(meta.schema_arrow.names), meta.metadata.num_rows


def iter_parquet(path: Path) -> Iterator[Record]:
    """Rows in order; ``line`` is the 1-based row number. Dates, times and decimals come as ISO strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path, pre_buffer=False)  # read-ahead buffers would grow with the file
    schema = parquet.schema_arrow
    to_text = [i for i, f in enumerate(schema) if pa.types.is_temporal(f.type) or pa.types.is_decimal(f.type)]
    row = 0
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH):
        for i in to_text:
            batch = batch.set_column(i, schema.field(i).with_type(pa.string()), batch.column(i).cast(pa.string()))
        for fields in batch.to_pylist():
            row += 1
            yield Record(row, fields, path.name)


def iter_texts(
    root: Path, files: tuple[str, ...], encoding: str | None, errors: str, compression: str | None = None
) -> Iterator[Record | BadRow]:
    """One Record per document, {"text": content, "path": relative name}, line 1; encoding per file."""
    for rel in files:
        path = root / rel
        sample, _ = enc.read_sample(path, compression)
        what = enc.binary_kind(sample)
        if what:
            yield BadRow(1, f"looks like a binary file, not text: it is {what}", rel)
            continue
        try:
            guess = enc.given_encoding(encoding, sample) if encoding else enc.detect_encoding(sample, name=rel)
        except ForgeError as e:
            yield BadRow(1, e.message, rel)
            continue
        per_line = encoding is None and enc.per_line_decoding(guess)
        with enc.open_text(path, compression, guess.encoding, errors, newline=None, per_line=per_line) as stream:
            text = stream.read()
        if not text.strip():
            yield BadRow(1, "empty document (only whitespace)", rel)
            continue
        yield Record(1, {"text": text, "path": rel}, rel)
