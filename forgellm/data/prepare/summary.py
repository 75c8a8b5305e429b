"""The end of a preparation's bookkeeping: each chunk's summary for the manifest, the data of the errors
that stop a preparation (what diagnosis reads), and memory handed back between its phases."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from forgellm.data.prepare.splits import SplitAssigner
from forgellm.errors import ErrorCode, ForgeError
from forgellm.project.layout import PreparedLayout
from forgellm.project.manifest import Manifest


def release_memory() -> None:
    """Return freed memory to the OS: Arrow's allocator and Python's keep it cached otherwise, and the
    process's peak would then grow with the size of the input."""
    import gc

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()


def chunk_summary(number: int, items: int, out: Any, assigner: SplitAssigner) -> dict[str, Any]:
    return {
        "chunk": number,
        "items": items,
        "kept": len(out.rows),
        "rejected": len(out.rejects),
        "format_errors": out.format_errors,
        "reasons": dict(out.reasons),
        "truncated": out.truncated,
        "truncated_lost_stop": out.truncated_lost_stop,
        "missing_columns": list(out.missing_columns.values()),
        "untrained": out.untrained,
        "error_codes": dict(out.error_codes),
        "split_state": assigner.state(),
    }


def nothing_left(manifest: Manifest, merge_reasons: Counter, work: Path) -> ForgeError:
    reasons: Counter = Counter()
    for chunk in manifest.chunks:
        reasons.update(chunk["reasons"])
    reasons.update(merge_reasons)
    top = "; ".join(f"{reason}: {count}" for reason, count in reasons.most_common(4)) or "the input has no rows"
    return ForgeError(
        f"No training examples are left after preparation ({top}). Nothing was published.",
        fix=f"Check the rejected rows in {PreparedLayout(work).rejects} and relax the filters or fix data.recipe in "
        "forge.yaml, then run again.",
        code=ErrorCode.DATA_NOTHING_LEFT,
        data=rejects_data(manifest, reasons),
    )


def rejects_data(manifest: Manifest, reasons: Counter) -> dict[str, Any]:
    """What the rejects tell a program (diagnosis): the most often missing recipe column, and how many
    examples kept no trained token. Chunks of a preparation begun by an older Forge lack both."""
    missing: dict[tuple[str, str], dict[str, Any]] = {}
    for chunk in manifest.chunks:
        for entry in chunk.get("missing_columns", []):
            seen = missing.setdefault((entry["role"], entry["column"]), {**entry, "count": 0})
            seen["count"] += entry["count"]
    top = max(missing.values(), key=lambda entry: entry["count"], default=None)
    codes: Counter = Counter()
    for chunk in manifest.chunks:
        codes.update(chunk.get("error_codes", {}))
    return {
        "rejected": sum(reasons.values()),
        "reasons": dict(reasons.most_common(10)),
        "missing_column": top,  # role, column, available, count
        "untrained": sum(chunk.get("untrained", 0) for chunk in manifest.chunks),
        "error_codes": dict(codes),  # the codes of ForgeErrors that rejected rows (a template that fails)
    }
