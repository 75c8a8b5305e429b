"""One chunk of `prepare`: records -> examples -> cleaned and filtered -> rendered and tokenized -> split.

Every input item leaves a chunk either as a kept row (with its split) or as a reject with its line and
reason — never silently.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from forgellm.config.schema import ForgeConfig, RecipeSection
from forgellm.data.prepare.keyindex import KeyIndex
from forgellm.data.prepare.neardup import NearDuplicateIndex, content_text, row_id
from forgellm.data.prepare.sources import Mixture, SourceItem
from forgellm.data.prepare.splits import SplitAssigner, content_key, parse_date
from forgellm.data.prepare.tokenize import (
    Encoded,
    encode_documents,
    encode_rendered,
    label_encoded,
    render_batch,
    tokenize_rendered,
)
from forgellm.data.read.damage import rejected_damage
from forgellm.data.read.records import (
    BadRow,
    EmptyTextError,
    Example,
    MissingColumnError,
    RecipeError,
    Record,
    reason_kind,
)
from forgellm.errors import ForgeError

if TYPE_CHECKING:
    from forgellm.templates.messages import ChatFormat

_EXCERPT = 160


@dataclass
class ChunkOutput:
    rows: list[dict[str, Any]] = field(default_factory=list)  # kept examples, in input order
    tokens: list[dict[str, Any]] = field(default_factory=list)  # their tokenized form
    rejects: list[dict[str, Any]] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)
    format_errors: int = 0  # unreadable rows and rows that don't fit the recipe (count toward the error rate)
    truncated: int = 0
    truncated_lost_stop: int = 0
    # What diagnosis needs of the rejects (ForgeError data), as fields, not as the reasons' words:
    missing_columns: dict[str, dict[str, Any]] = field(default_factory=dict)  # "role:column" -> column, role...
    untrained: int = 0  # examples with no trained token left
    error_codes: Counter = field(default_factory=Counter)  # ForgeError code -> rows it rejected (e.g. rendering)


@dataclass
class PendingChunk:
    """A chunk between its phases: examples rendered, tokens filled in by `tokenize`."""

    out: ChunkOutput
    examples: list[Example] = field(default_factory=list)
    rendered: list[Any] = field(default_factory=list)
    tokens: list[Any] = field(default_factory=list)


class StageTimer:
    """Seconds spent per stage, summed over chunks, for stats.json and the bottleneck."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - since
        return now


def _excerpt(example: Example | Record | None) -> str:
    if example is None:
        return ""
    if isinstance(example, Record):
        text = " | ".join(str(v) for v in example.fields.values() if v not in (None, ""))
    elif example.messages:
        text = " | ".join(m["content"] for m in example.messages)
    else:
        text = example.text or ""
    return text[:_EXCERPT]


class ChunkProcessor:
    def __init__(
        self,
        config: ForgeConfig,
        fmt: str,
        chat_format: ChatFormat,
        tokenizer: Any,
        index: KeyIndex,
        assigner: SplitAssigner,
        timer: StageTimer,
        near: NearDuplicateIndex | None = None,
        mixture: Mixture | None = None,
    ) -> None:
        self.config, self.fmt, self.chat_format, self.tokenizer = config, fmt, chat_format, tokenizer
        self.recipe: RecipeSection = config.data.recipe
        self.mixture = mixture  # data.sources: each item says its source, read with that source's format + recipe
        self.index, self.assigner, self.timer, self.near = index, assigner, timer, near
        self.cpt = config.training.stage == "cpt"

    # -- records -> examples -------------------------------------------------------------------
    def _examples(self, items: Sequence[Record | BadRow], out: ChunkOutput) -> list[Example]:
        from forgellm.data.prepare.recipe import to_example

        examples = []
        for tagged in items:
            fmt, recipe, source, item = self.fmt, self.recipe, None, tagged
            if isinstance(tagged, SourceItem):  # a mixture's item: its source's reading, its name on the row
                source, item = self.mixture.source(tagged.name), tagged.item  # type: ignore[union-attr]
                fmt, recipe = source.format, source.recipe
            if isinstance(item, BadRow):
                where = _where(source.name, item.source) if source else item.source
                self._reject(out, item.line, where, item.reason, item.excerpt, format_error=True)
                continue
            try:
                example = to_example(item, fmt, recipe)
                if source is not None:
                    file = {"file": item.source} if item.source else {}
                    example = replace(example, source=source.name, extra={**example.extra, "role": source.role, **file})
            except RecipeError as exc:
                # Empty answers are a quality drop; only rows that don't fit the format count as errors.
                format_error = not isinstance(exc, EmptyTextError)
                if isinstance(exc, MissingColumnError):
                    _count_missing(out, exc)
                where = _where(source.name, item.source) if source else item.source
                self._reject(out, item.line, where, str(exc), _excerpt(item), format_error=format_error)
                continue
            cleaned = self._filter(example, out)
            if cleaned is not None:
                examples.append(cleaned)
        return examples

    def _filter(self, example: Example, out: ChunkOutput) -> Example | None:
        """Quality filters and PII policy; the recipe has already cleaned the text (data.recipe.cleaning)."""
        if example.messages is not None:
            texts = [m["content"] for m in example.messages if m["role"] != "system"]
            answer = "".join(m["content"] for m in example.messages if m["role"] == "assistant")
            rendered = [m["content"] for m in example.messages]
        else:
            texts, answer = [example.text or ""], example.text or ""
            rendered = texts
        # Damaged text (the rule study reports with) is never trained: the row goes to rejects with why.
        reason = rejected_damage(rendered) or self._filter_reason(texts, answer)
        if reason is None:
            example, reason = self._apply_pii(example)
        if reason is not None:
            self._reject(out, example.line, example.source, reason, _excerpt(example))
            return None
        return example

    def _filter_reason(self, texts: list[str], answer: str) -> str | None:
        filters = self.config.preprocessing.filters
        if filters.drop_empty and (not texts or any(not t.strip() for t in texts)):
            return "empty text after cleaning"
        if len(answer) < filters.min_chars:
            return f"answer shorter than preprocessing.filters.min_chars ({filters.min_chars})"
        if filters.max_chars is not None and sum(len(t) for t in texts) > filters.max_chars:
            return f"longer than preprocessing.filters.max_chars ({filters.max_chars})"
        return None

    def _apply_pii(self, example: Example) -> tuple[Example, str | None]:
        policy = self.config.preprocessing.pii
        if policy == "keep":
            return example, None
        from dataclasses import replace

        from forgellm.data.prepare.cleaning import find_pii, mask_pii

        if example.messages is not None:
            hits = [h for m in example.messages for h in find_pii(m["content"])]
        else:
            hits = find_pii(example.text or "")
        if not hits:
            return example, None
        if policy == "drop":
            kinds = ", ".join(sorted({h.kind for h in hits}))
            return example, f"contains personal data ({kinds}); preprocessing.pii is 'drop'"
        if example.messages is not None:
            return replace(example, messages=[{**m, "content": mask_pii(m["content"])} for m in example.messages]), None
        return replace(example, text=mask_pii(example.text or "")), None

    def _reject(
        self, out: ChunkOutput, line: int, source: str, reason: str, excerpt: str, *, format_error: bool = False
    ) -> None:
        out.rejects.append({"line": line, "source": source, "reason": reason, "excerpt": excerpt})
        out.reasons[reason_kind(reason)] += 1
        out.format_errors += int(format_error)

    # -- the whole chunk, in three phases --------------------------------------------------------
    # begin (main thread): records -> examples -> rendered text; tokenize (a worker thread: the Rust
    # tokenizer releases the GIL, so the next chunk's Python work overlaps it); finish (main thread, in
    # chunk order): labels, lengths, duplicates, splits. State (key index, split counters) changes only in finish.
    def begin(self, items: Sequence[Record | BadRow], read_started: float) -> PendingChunk:
        pending = PendingChunk(ChunkOutput())
        start = self.timer.add("read", read_started)
        examples = self._examples(items, pending.out)
        start = self.timer.add("recipe", start)
        if self.cpt:
            pending.examples = examples
            return pending
        rendered = render_batch(self.chat_format, [e.messages or [] for e in examples])
        for example, item in zip(examples, rendered, strict=True):
            if isinstance(item, ForgeError):
                pending.out.error_codes[str(item.code)] += 1
                self._reject(pending.out, example.line, example.source, item.message, _excerpt(example))
            else:
                pending.examples.append(example)
                pending.rendered.append(item)
        self.timer.add("render", start)
        return pending

    def tokenize(self, pending: PendingChunk) -> PendingChunk:
        start = time.perf_counter()
        if self.cpt:
            overlap, limit = self.config.preprocessing.cpt_overlap, self.config.model.max_length
            pending.tokens = encode_documents(self.tokenizer, [e.text or "" for e in pending.examples], limit, overlap)
        else:  # the Rust half only: labelling is Python, done in `finish` so this thread frees the GIL
            pending.tokens = encode_rendered(self.tokenizer, pending.rendered)
        self.timer.add("tokenize", start)
        return pending

    def finish(self, chunk_no: int, pending: PendingChunk) -> ChunkOutput:
        out = pending.out
        start = time.perf_counter()
        if not self.cpt:
            pending.tokens = label_encoded(pending.rendered, pending.tokens)
            start = self.timer.add("tokenize", start)
        encoded = self._windows(pending) if self.cpt else self._fit_all(pending)
        self._assign(chunk_no, encoded, out)
        self.timer.add("split", start)
        out.rejects.sort(key=lambda r: (r["source"], r["line"]))
        return out

    def _fit_all(self, pending: PendingChunk) -> list[tuple[Example, str, list, list, int]]:
        results = []
        for example, enc in zip(pending.examples, pending.tokens, strict=True):
            if len(enc.input_ids) > self.config.model.max_length and self._can_split(example):
                results += self._encode_parts(example, pending.out)
                continue
            kept = self._fit_length(example, enc, pending.out)
            if kept is not None:
                results.append((example, enc.text, *kept))
        return results

    def _can_split(self, example: Example) -> bool:
        turns = [m["role"] for m in example.messages or []]
        return self.config.preprocessing.truncation == "split" and turns.count("user") > 1

    def _encode_parts(self, example: Example, out: ChunkOutput) -> list[tuple[Example, str, list, list, int]]:
        """A long multi-turn conversation becomes several examples, cut between exchanges."""
        from dataclasses import replace

        parts = split_exchanges(example.messages or [], self._fits)
        group = content_key(f"{example.source}:{example.line}")  # all parts of a conversation share a split
        examples = [
            replace(example, messages=part, extra={**example.extra, "part": n, "group": group})
            for n, part in enumerate(parts)
        ]
        rendered = render_batch(self.chat_format, [e.messages or [] for e in examples])
        results = []
        for part, enc in zip(examples, tokenize_rendered(self.tokenizer, rendered), strict=True):
            kept = self._fit_length(part, enc, out)
            if kept is not None:
                results.append((part, enc.text, *kept))
        return results

    def _fits(self, messages: list[dict]) -> bool:
        text = self.chat_format.render_text(messages)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) <= self.config.model.max_length

    def _fit_length(self, example: Example, enc: Encoded, out: ChunkOutput):
        limit = self.config.model.max_length
        ids, labels, trained = enc.input_ids, enc.labels, enc.trained_tokens
        if len(ids) > limit:
            if self.config.preprocessing.truncation != "truncate":
                policy = self.config.preprocessing.truncation
                reason = (
                    f"longer than model.max_length ({len(ids)} > {limit} tokens); "
                    f"preprocessing.truncation is '{policy}'"
                )
                self._reject(out, example.line, example.source, reason, _excerpt(example))
                return None
            out.truncated += 1
            last_trained = max((i for i, label in enumerate(labels) if label != -100), default=-1)
            out.truncated_lost_stop += int(last_trained >= limit)  # the answer's end-of-turn was cut off
            ids, labels = ids[:limit], labels[:limit]
            trained = sum(label != -100 for label in labels)
        if trained == 0:
            out.untrained += 1
            self._reject(
                out, example.line, example.source, "no trained tokens (nothing of the answer fits)", _excerpt(example)
            )
            return None
        return ids, labels, trained

    def _windows(self, pending: PendingChunk) -> list[tuple[Example, str, list, list, int]]:
        results = []
        for example, parts in zip(pending.examples, pending.tokens, strict=True):
            for number, ids in enumerate(parts):
                text = self.tokenizer.decode(ids)
                part = _with_window(example, number, content_key(example.text or ""))
                results.append((part, text, ids, list(ids), len(ids)))
        return results

    def _assign(self, chunk_no: int, encoded: list, out: ChunkOutput) -> None:
        filters = self.config.preprocessing.filters
        keys = [content_key(text) for _, text, *_ in encoded]
        earlier = self.index.lookup(keys)
        fresh: dict[int, tuple[str | None, int]] = {}
        group_split: dict[int, str | None] = {}  # windows of one document (always within one chunk)
        for (example, text, ids, labels, trained), key in zip(encoded, keys, strict=True):
            previous = earlier.get(key) or fresh.get(key)
            if previous is not None and filters.drop_exact_duplicates:
                reason = f"exact duplicate of line {previous[1]}"
                self._reject(out, example.line, example.source, reason, _excerpt(example))
                continue
            if previous is None and self.near is not None and self._near_duplicate(example, text, out):
                continue
            label = example.label
            group = example.extra.get("group", key)
            if previous is not None:
                split = previous[0]
            elif group in group_split:
                split = group_split[group]
            else:
                synthetic = example.extra.get("synthetic", False)
                split = group_split[group] = self.assigner.assign(group, label, synthetic=synthetic)
            if previous is None:
                fresh[key] = (split, example.line)
            out.rows.append(_row(example, text, split, len(ids), trained))
            out.tokens.append(
                {
                    "line": example.line,
                    "split": split,
                    "key": key,
                    "label": label,
                    "date": parse_date(example.date),
                    "duplicate": previous is not None,
                    "source": example.source,
                    "input_ids": ids,
                    "labels": labels,
                    "length": len(ids),
                }
            )
        self.index.add(chunk_no, ((k, s, line) for k, (s, line) in fresh.items()))

    def _near_duplicate(self, example: Example, text: str, out: ChunkOutput) -> bool:
        """Reject the example when a kept one is a near-duplicate; else remember it."""
        draft = _row(example, text, None, 0, 0)
        signature, match = self.near.first_match(content_text(draft))
        if match is None:
            self.near.add(row_id(draft), signature)
            return False
        source, line, _ = match.rsplit(":", 2)
        where = f"line {line}" + (f" of {source}" if source and source != example.source else "")
        self._reject(out, example.line, example.source, f"near-duplicate of {where}", _excerpt(example))
        return True


def split_exchanges(messages: list[dict], fits) -> list[list[dict]]:
    """Greedy: consecutive exchanges (a user turn and what follows it) while `fits(part)` holds; the
    system message starts every part. An exchange too long on its own becomes a part of its own (and is
    then dropped by the length rule)."""
    system = [m for m in messages[:1] if m["role"] == "system"]
    exchanges: list[list[dict]] = []
    for message in messages[len(system) :]:
        if message["role"] == "user" and (not exchanges or exchanges[-1][-1]["role"] != "user"):
            exchanges.append([])
        if not exchanges:
            exchanges.append([])
        exchanges[-1].append(message)
    parts: list[list[dict]] = []
    current: list[dict] = []
    for exchange in exchanges:
        if current and not fits(system + current + exchange):
            parts.append(system + current)
            current = []
        current = current + exchange
    if current:
        parts.append(system + current)
    return [part for part in parts if any(m["role"] == "assistant" for m in part)]


def _with_window(example: Example, number: int, document_key: int) -> Example:
    """A window of a document; all windows of a document share its split (overlaps never leak)."""
    from dataclasses import replace

    return replace(example, extra={**example.extra, "window": number, "group": document_key})


def _row(example: Example, text: str, split: str | None, tokens: int, trained: int) -> dict[str, Any]:
    row: dict[str, Any] = {"line": example.line}
    if example.source:
        row["source"] = example.source
    row["split"] = split
    if example.label is not None:
        row["label"] = example.label
    if example.messages is not None:
        row["messages"] = example.messages
    # role, file: a mixture's source's role and the file in it; rejected: a preference pair's other side;
    # synthetic: written by `forge expand` (the split keeps it in train)
    for marker in ("role", "file", "window", "part", "rejected", "synthetic"):
        if marker in example.extra:
            row[marker] = example.extra[marker]
    row.update(text=text, tokens=tokens, trained_tokens=trained)
    return row


def _where(name: str, file: str) -> str:
    """A mixture reject's source: the source's name, and the file inside a folder source."""
    return f"{name}/{file}" if file else name


def _count_missing(out: ChunkOutput, exc: MissingColumnError) -> None:
    entry = out.missing_columns.setdefault(
        f"{exc.role}:{exc.column}", {"role": exc.role, "column": exc.column, "available": exc.available, "count": 0}
    )
    entry["count"] += 1
