"""What a remote advisor may see of the data: a few rows spread over the sample, cut and PII-masked,
plus column statistics of every record read. ``describe_sent`` says it in one line for the user."""

from __future__ import annotations

from collections import Counter
from typing import Any

from forgellm.advisor.schemas import DataRequest
from forgellm.data.prepare.cleaning import mask_pii
from forgellm.data.read.records import Record

MAX_VALUE_CHARS = 500  # longest string value sent; answers need the shape of the data, not all of it
MAX_LIST_ITEMS = 20  # turns of a conversation sent; the first ones show the layout
STAT_VALUE_CHARS = 80  # distinct values shown in column statistics are short by design
STAT_VALUES = 5


def spread_indices(total: int, wanted: int) -> list[int]:
    """``wanted`` indices spread evenly from the first to the last record (same input, same rows)."""
    if wanted <= 0 or total <= 0:
        return []
    if wanted >= total:
        return list(range(total))
    if wanted == 1:
        return [0]
    return sorted({round(i * (total - 1) / (wanted - 1)) for i in range(wanted)})


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [cut: {len(text):,} characters in all]"


def _prepare_value(value: Any, redact_pii: bool) -> Any:
    """A value as sent: strings masked (when asked) then cut; lists and objects handled item by item."""
    if isinstance(value, str):
        return _shorten(mask_pii(value) if redact_pii else value, MAX_VALUE_CHARS)
    if isinstance(value, list):
        return [_prepare_value(v, redact_pii) for v in value[:MAX_LIST_ITEMS]]
    if isinstance(value, dict):
        return {str(k): _prepare_value(v, redact_pii) for k, v in value.items()}
    return value


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def column_statistics(records: list[Record], redact_pii: bool) -> list[dict[str, Any]]:
    """Per column: types seen, missing values, distinct values and the most common short values."""
    names: dict[str, None] = {}  # insertion-ordered set: columns in order of first appearance
    for record in records:
        names.update(dict.fromkeys(record.fields))
    stats = []
    for name in names:
        values = [r.fields.get(name) for r in records]
        present = [v for v in values if not _is_missing(v)]
        strings = [v.strip() for v in present if isinstance(v, str)]
        common = Counter(s for s in strings if len(s) <= STAT_VALUE_CHARS).most_common(STAT_VALUES)
        shown = [mask_pii(s) if redact_pii else s for s, _ in common]
        stats.append(
            {
                "name": name,
                "types": dict(Counter(type(v).__name__ for v in present)),
                "missing": len(values) - len(present),
                "distinct": len(set(strings)),
                "mean_chars": round(sum(map(len, strings)) / len(strings)) if strings else None,
                "common_values": shown,
            }
        )
    return stats


def build_data_request(
    records: list[Record],
    *,
    file_name: str,
    kind: str,
    goal: str | None,
    hint: dict[str, Any] | None,
    sample_rows: int,
    redact_pii: bool,
) -> DataRequest:
    """The data question for an advisor: ``sample_rows`` rows spread over ``records``, cut to
    MAX_VALUE_CHARS and PII-masked when ``redact_pii``; statistics come from all ``records``."""
    picked = [records[i] for i in spread_indices(len(records), sample_rows)]
    rows = [{str(k): _prepare_value(v, redact_pii) for k, v in r.fields.items()} for r in picked]
    return DataRequest(
        goal=goal,
        file_name=file_name,
        kind=kind,
        columns=column_statistics(records, redact_pii),
        rows=rows,
        hint=hint,
        total_rows=len(records),
        pii_masked=redact_pii,
        value_chars=MAX_VALUE_CHARS,
    )


def describe_sent(request: DataRequest, provider: str, model: str) -> str:
    """One line saying exactly what leaves the machine for this data question."""
    parts = ["the goal"] if request.goal else []
    total = request.total_rows if request.total_rows is not None else len(request.rows)
    if request.rows:
        how = ["PII masked" if request.pii_masked else "PII not masked"]
        if request.value_chars:
            how.append(f"values cut to {request.value_chars:,} chars")
        parts.append(f"{len(request.rows):,} of {total:,} sampled rows ({', '.join(how)})")
    else:
        parts.append("no data rows")
    count = len(request.columns)
    parts.append(f"statistics of {count:,} column{'' if count == 1 else 's'}")
    if request.hint:
        parts.append("the offline format detection")
    return f"Sent to {model} ({provider}): {', '.join(parts)}."
