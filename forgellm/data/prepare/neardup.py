"""Near-duplicate filtering for `prepare` (preprocessing.filters.drop_near_duplicates).

MinHash of character 5-grams (the same signature `forge study` reports with) in a MinHash-LSH index.
The index lives in memory and grows with the kept rows (about 1 KB per row); on resume it is rebuilt
from the finished chunks, so a resumed run drops exactly what an uninterrupted one drops.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

NEAR_NUM_PERM = 128
_SHINGLE = 5


_EMPTY_MINHASH: Any = None


def _identity(value: int) -> int:
    return value


def minhash(text: str, limit: int = 1000) -> Any:
    """MinHash of a text's character 5-grams (lower-cased, whitespace collapsed); robust to small edits."""
    global _EMPTY_MINHASH
    if _EMPTY_MINHASH is None:  # permutations are drawn once, then shared by every copy
        from datasketch import MinHash

        _EMPTY_MINHASH = MinHash(num_perm=NEAR_NUM_PERM, hashfunc=_identity)
    norm = " ".join(text[:limit].lower().split())
    # crc32 (not Python's salted str hash): the same text gets the same signature in every process, which
    # `prepare` needs to resume near-duplicate filtering exactly.
    shingles = {zlib.crc32(norm[i : i + _SHINGLE].encode()) for i in range(max(1, len(norm) - _SHINGLE + 1))}
    signature = _EMPTY_MINHASH.copy()
    signature.update_batch(list(shingles))
    return signature


def content_text(row: dict[str, Any]) -> str:
    """The text compared for near-duplicates: user and assistant turns, or the document."""
    if row.get("messages"):
        return "\n".join(m["content"] for m in row["messages"] if m["role"] != "system")
    return row.get("text") or ""


class NearDuplicateIndex:
    def __init__(self, threshold: float) -> None:
        from datasketch import MinHashLSH

        self.lsh = MinHashLSH(threshold=threshold, num_perm=NEAR_NUM_PERM)
        self.count = 0

    def first_match(self, text: str) -> tuple[Any, str | None]:
        """(signature, the id of a kept near-duplicate or None)."""
        signature = minhash(text)
        matches = self.lsh.query(signature)
        return signature, (min(matches, key=_line_of) if matches else None)

    def add(self, row_id: str, signature: Any) -> None:
        self.lsh.insert(row_id, signature)
        self.count += 1

    def add_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.add(row_id(row), minhash(content_text(row)))


def row_id(row: dict[str, Any]) -> str:
    part = row.get("part", row.get("window", 0))
    return f"{row.get('source', '')}:{row['line']}:{part}"


def _line_of(identifier: str) -> tuple[str, int]:
    source, line, _ = identifier.rsplit(":", 2)
    return source, int(line)
