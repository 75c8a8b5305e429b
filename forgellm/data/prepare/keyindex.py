"""A disk-backed index of example keys, so exact-duplicate and leakage checks use bounded memory.

Each key remembers the chunk that added it and its split; on resume, the keys of chunks that were not
finished are deleted, so a resumed run sees exactly what an uninterrupted one saw.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

SPLIT_CODES = {"train": 0, "val": 1, "test": 2, None: -1}
SPLIT_NAMES = {code: name for name, code in SPLIT_CODES.items()}


class KeyIndex:
    def __init__(self, path: Path, cache_mb: int = 16) -> None:
        self.path = path
        self._db = sqlite3.connect(str(path))
        # The page cache is resident memory that fills as the index grows; past it, pages come from the
        # OS file cache (not counted against the process), so a small cache keeps the peak flat.
        self._db.execute(f"PRAGMA cache_size = -{cache_mb * 1024}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS keys (key INTEGER PRIMARY KEY, chunk INTEGER, split INTEGER, line INTEGER)"
        )

    def lookup(self, keys: Iterable[int]) -> dict[int, tuple[str | None, int]]:
        """(split, first line) of every key already in the index (split None: decided at the end)."""
        found: dict[int, tuple[str | None, int]] = {}
        batch = list(dict.fromkeys(keys))
        for start in range(0, len(batch), 900):  # SQLite's default limit on host parameters
            part = batch[start : start + 900]
            marks = ",".join("?" * len(part))
            query = f"SELECT key, split, line FROM keys WHERE key IN ({marks})"
            for key, split, line in self._db.execute(query, part):
                found[key] = (SPLIT_NAMES[split], line)
        return found

    def add(self, chunk: int, items: Iterable[tuple[int, str | None, int]]) -> None:
        """Record (key, split, line) of the chunk's first occurrences."""
        rows = ((key, chunk, SPLIT_CODES[split], line) for key, split, line in items)
        self._db.executemany("INSERT OR IGNORE INTO keys (key, chunk, split, line) VALUES (?, ?, ?, ?)", rows)
        self._db.commit()

    def forget_from(self, chunk: int) -> None:
        """Drop keys added by chunk `chunk` and later (they belong to work that was not finished)."""
        self._db.execute("DELETE FROM keys WHERE chunk >= ?", (chunk,))
        self._db.commit()

    def close(self) -> None:
        self._db.close()
