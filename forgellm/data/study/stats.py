"""Streaming counters of the data study: exact and near duplicates, affected rows, token lengths."""

from __future__ import annotations

import hashlib
from typing import Any

from forgellm.data.prepare.neardup import NEAR_NUM_PERM, minhash
from forgellm.data.study import checks
from forgellm.data.token_stats import TextTally, TokenCounting

NEAR_THRESHOLD = 0.9
NEAR_LIMIT = 20_000  # texts indexed for near-duplicates (MinHash LSH); later ones are not checked
HASH_LIMIT = 2_000_000  # distinct hashes remembered for exact duplicates; past it, only known ones match
EXAMPLE_LINES = 10
PAIR_EXAMPLES = 5
TOKEN_BATCH = 256  # texts per tokenizer call


class Seen:
    """Exact-duplicate detector: 8-byte hashes -> first line, capped at HASH_LIMIT entries."""

    def __init__(self) -> None:
        self.first: dict[int, int] = {}
        self.count = 0
        self.lines: list[int] = []
        self.pairs: list[list[int]] = []

    def check(self, text: str, line: int) -> bool:
        key = int.from_bytes(hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).digest(), "big")
        first = self.first.get(key)
        if first is None:
            if len(self.first) < HASH_LIMIT:
                self.first[key] = line
            return False
        self.count += 1
        if len(self.lines) < EXAMPLE_LINES:
            self.lines.append(line)
        if len(self.pairs) < PAIR_EXAMPLES:
            self.pairs.append([first, line])
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.count, "lines": self.lines, "pairs": self.pairs}


class Hits:
    """Rows affected by one kind of problem: a count and the first few line numbers."""

    def __init__(self) -> None:
        self.rows = 0
        self.lines: list[int] = []

    def add(self, line: int) -> None:
        self.rows += 1
        if len(self.lines) < EXAMPLE_LINES:
            self.lines.append(line)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "lines": self.lines}


class NearDuplicates:
    """MinHash LSH over the first NEAR_LIMIT distinct texts: rows similar to an earlier one."""

    def __init__(self) -> None:
        self.lsh: Any = None
        self.signatures: dict[int, tuple[Any, int]] = {}  # arrival number -> (signature, line)
        self.checked = 0
        self.rows = 0
        self.lines: list[int] = []
        self.pairs: list[list[Any]] = []

    def add(self, text: str, line: int) -> None:
        if self.checked >= NEAR_LIMIT or len(text.strip()) < 20:
            return
        if self.lsh is None:
            from datasketch import MinHashLSH

            # Candidates at a lower threshold, then the estimated similarity decides: fewer misses near 0.9.
            self.lsh = MinHashLSH(threshold=NEAR_THRESHOLD - 0.1, num_perm=NEAR_NUM_PERM)
        self.checked += 1
        # Keyed by arrival, not by line: the documents of a folder all start at line 1.
        key = self.checked
        signature = minhash(text)
        best: tuple[float, int] | None = None
        for other in self.lsh.query(signature):
            similarity = signature.jaccard(self.signatures[other][0])
            if similarity >= NEAR_THRESHOLD and (best is None or similarity > best[0]):
                best = (similarity, other)
        if best is not None:
            self.rows += 1
            if len(self.lines) < EXAMPLE_LINES:
                self.lines.append(line)
            if len(self.pairs) < PAIR_EXAMPLES:
                self.pairs.append([self.signatures[best[1]][1], line, round(best[0], 3)])
        self.lsh.insert(key, signature)
        self.signatures[key] = (signature, line)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "lines": self.lines,
            "pairs": self.pairs,
            "checked": self.checked,
            "limit": NEAR_LIMIT,
            "threshold": NEAR_THRESHOLD,
        }


class TokenCounter:
    """Token lengths in batches, counted by ``counting`` (data/token_stats.py: the model's tokenizer, another
    local one, or the word estimate; ``name`` says which), plus the words, lines, characters and pages."""

    def __init__(self, counting: TokenCounting, max_length: int | None) -> None:
        self.counting = counting
        self.tokenizer = counting.tokenizer
        self.max_length = max_length
        self.name = counting.method
        self.stats = checks.LengthStats()
        self.text = TextTally(counting)
        self.pending: list[tuple[int, str, list[dict[str, str]] | None]] = []
        self.over = Hits()
        self.tokens_total = 0
        self.tokens_over = 0

    def add(self, line: int, text: str, messages: list[dict[str, str]] | None = None) -> None:
        self.pending.append((line, text, messages))
        if len(self.pending) >= TOKEN_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        lines = [line for line, _, _ in self.pending]
        counts = self.counting.count([self._render(text, messages) for _, text, messages in self.pending])
        for (_, text, _), count in zip(self.pending, counts, strict=True):
            self.text.add(text, count)
        self.pending = []
        for line, count in zip(lines, counts, strict=True):
            self.stats.add(count)
            self.tokens_total += count
            if self.max_length is not None and count > self.max_length:
                self.over.add(line)
                self.tokens_over += count - self.max_length

    def _render(self, text: str, messages: list[dict[str, str]] | None) -> str:
        if messages is None or not getattr(self.tokenizer, "chat_template", None):
            return text
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        except Exception:  # a template that rejects this conversation: count the plain text
            return text

    def truncation(self) -> dict[str, Any] | None:
        if self.max_length is None:
            return None
        examples = self.stats.count
        return {
            "max_length": self.max_length,
            "examples_over": self.over.rows,
            "examples_share": round(self.over.rows / examples, 4) if examples else 0.0,
            "tokens_over": self.tokens_over,
            "tokens_share": round(self.tokens_over / self.tokens_total, 4) if self.tokens_total else 0.0,
            "lines": self.over.lines,
        }


def tokenizer_name(tokenizer: Any) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
