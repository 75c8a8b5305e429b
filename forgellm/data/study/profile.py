"""The data quality profile behind `forge study FILE`: one streamed pass, bounded memory, concrete fixes.

`study_dataset(records)` reads every record once and keeps only counters, hash sets (capped), a MinHash
LSH index over the first `NEAR_LIMIT` texts and reservoirs of lengths, so a file of any size can be
studied. Given a detection and a recipe (`to_example`) it also profiles the examples the recipe makes.

A record's *text* is its example's message contents (or document text) when a recipe is given, else
all its string values joined. Its *main text* is the example's first user turn, else the column that
looks like the prompt (by name: instruction, prompt, question, description, ... else the longest).

Token counts follow the one rule of `forgellm.data.token_stats` (the model's tokenizer, with its chat
template when it has one, else another local tokenizer, else the word estimate): `token_counter` names
the method used, and `text_stats` holds the totals (tokens, words, lines, characters, pages).

Severity of a finding (see `study_findings.py`, which derives every finding from the report's numbers):
- error: training would fail or silently learn from mostly broken data: no usable records, more than
  20 % (preprocessing.max_error_rate) of records unreadable or rejected by the recipe, more than half
  of the examples longer than model.max_length.
- warning: the model would learn something wrong or compute is wasted, fix before training: unfilled
  single-brace placeholders, encoding damage, PII, duplicates >= 1 %, empty records, label imbalance
  >= 10x, truncation of > 1 % of examples, >= 50 % missing values in a column, a recipe column
  with missing values, some rejected records.
- info: worth knowing, act if it matters: double-brace anonymisation placeholders, duplicates < 1 %,
  near-duplicates, outliers, short records, constant or mixed-type columns, languages, the max_length
  that covers 99 % of the examples.
"""

from __future__ import annotations

import heapq
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from forgellm.data.prepare.cleaning import find_pii, find_placeholders, has_literal_newlines
from forgellm.data.read.damage import encoding_problems
from forgellm.data.read.records import BadRow, Example, RecipeError, Record
from forgellm.data.study import checks
from forgellm.data.study.report import SEVERITY_ORDER, StudyReport
from forgellm.data.study.stats import EXAMPLE_LINES, Hits, NearDuplicates, Seen, TokenCounter, tokenizer_name
from forgellm.data.token_stats import TokenCounting, counting_for, estimate_counting
from forgellm.models.lengths import max_length_for

MAX_COLUMNS = 200
LABEL_MAX_DISTINCT = 50
SHORT_CHARS = 5  # fewer non-space characters than this is "very short"
_MAIN_NAMES = ("instruction", "prompt", "question", "query", "input", "user", "description", "text", "content")
_LABEL_NAMES = ("label", "category", "intent", "class", "type", "kind", "topic", "tag")


class _Column:
    """What one column looked like: types of present values, missing kinds, small value counts."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.present = 0
        self.types: Counter[str] = Counter()
        self.missing: Counter[str] = Counter()
        self.missing_lines: list[int] = []
        self.values: Counter[str] | None = Counter()  # None once it has too many distinct values
        self.chars = 0
        self.literal_newlines = 0  # values whose line breaks are literal "\n" (unescape_newlines)

    def add(self, value: Any, line: int) -> None:
        self.present += 1
        kind = checks.missing_kind(value)
        if kind is not None:
            self.missing[kind] += 1
            if len(self.missing_lines) < EXAMPLE_LINES:
                self.missing_lines.append(line)
            return
        self.types[checks.value_type(value) or "string"] += 1
        if isinstance(value, str):
            self.chars += len(value)
            if "\\" in value and has_literal_newlines(value):
                self.literal_newlines += 1
        if self.values is not None:
            key = value.strip() if isinstance(value, str) else json.dumps(value, default=str)[:200]
            self.values[key] += 1
            if len(self.values) > LABEL_MAX_DISTINCT:
                self.values = None

    def profile(self, rows: int) -> dict[str, Any]:
        filled = sum(self.types.values())
        missing = dict(self.missing)
        missing["none"] = missing.get("none", 0) + rows - self.present  # absent keys count as None
        total = sum(missing.values())
        dominant = self.types.most_common(1)[0][0] if self.types else None
        return {
            "name": self.name,
            "type": dominant,
            "types": {t: round(n / filled, 4) for t, n in self.types.most_common()} if filled else {},
            "filled": filled,
            "missing": {
                "none": missing.get("none", 0),
                "empty": missing.get("empty", 0),
                "whitespace": missing.get("whitespace", 0),
                "total": total,
                "share": round(total / rows, 4) if rows else 0.0,
                "lines": self.missing_lines,
            },
            "distinct": len(self.values) if self.values is not None else None,
            "mean_chars": round(self.chars / filled, 1) if filled else 0.0,
            "literal_newlines": self.literal_newlines,
            "values": dict(self.values.most_common(LABEL_MAX_DISTINCT)) if self.values is not None else None,
        }


def study_dataset(
    records: Iterable[Record | BadRow | list[Record | BadRow]],
    *,
    detection: Any = None,
    to_example: Callable[..., Example] | None = None,
    tokenizer: Any = None,
    counting: TokenCounting | None = None,
    max_length: int | None = None,
    sample_note: str | None = None,
    progress: Callable[[int], None] | None = None,
    reading: Callable[[], dict[str, Any]] | None = None,
) -> StudyReport:
    """Profile records in one streamed pass.

    `records` may hold Records, BadRows (counted as unreadable) or batches (lists) of them, as
    `open_dataset(path).batches()` yields. With `detection` (a Detection: `.format`, `.recipe`) the
    examples are made by `to_example(record, detection.format, detection.recipe)` (default: the one in
    forgellm.data.prepare.recipe); with only `to_example`, it is called as `to_example(record)`. `progress`
    gets the number of records read so far, every 1000 records and at the end. `reading` (`Dataset.reading`)
    says, once the records are read, how the file was read and what the reader skipped. Tokens are counted by
    `counting` (token_stats.token_counting), else by `tokenizer` as the model's, else by the word estimate.
    """
    from forgellm.data.study.findings import build_findings

    if counting is None:
        counting = counting_for(tokenizer, tokenizer_name(tokenizer)) if tokenizer is not None else estimate_counting()
    profiler = _Profiler(_example_maker(detection, to_example), _recipe_columns(detection), counting, max_length)
    for item in records:
        for entry in item if isinstance(item, list) else (item,):
            profiler.add(entry)
            if progress is not None and profiler.read % 1000 == 0:
                progress(profiler.read)
    report = profiler.finish(sample_note)
    if progress is not None:
        progress(profiler.read)
    if reading is not None:
        report.reading = reading()
    report.findings = sorted(build_findings(report), key=lambda f: (SEVERITY_ORDER[f.severity], -f.count))
    return report


def _example_maker(detection: Any, to_example: Callable[..., Example] | None) -> Callable[[Record], Example] | None:
    if detection is None:
        return to_example
    if to_example is None:
        from forgellm.data.prepare.recipe import to_example as default_to_example

        to_example = default_to_example
    fn = to_example
    return lambda record: fn(record, detection.format, detection.recipe)


def _recipe_columns(detection: Any) -> dict[str, Any]:
    columns = getattr(getattr(detection, "recipe", None), "columns", None)
    return dict(columns) if isinstance(columns, dict) else {}


class _Profiler:
    def __init__(
        self,
        make_example: Callable[[Record], Example] | None,
        recipe_columns: dict[str, Any],
        counting: TokenCounting,
        max_length: int | None,
    ) -> None:
        self.make_example = make_example
        self.recipe_columns = recipe_columns
        self.tokens = TokenCounter(counting, max_length)
        self.read = 0
        self.rows = 0
        self.unreadable = Hits()
        self.unreadable_reasons: Counter[str] = Counter()
        self.columns: dict[str, _Column] = {}
        self.buffer: list[Record] = []
        self.main_column: str | None = None
        self.main_decided = False
        self.records_seen, self.texts_seen = Seen(), Seen()
        self.near = NearDuplicates()
        self.encoding = {kind: Hits() for kind in ("mojibake", "control_chars", "replacement_chars", "nul")}
        self.placeholder_rows = {"single": Hits(), "double": Hits()}
        self.placeholder_names: dict[str, Counter[str]] = {"single": Counter(), "double": Counter()}
        self.pii: dict[str, Hits] = {}
        self.pii_samples: dict[str, list[str]] = {}
        self.chars = checks.LengthStats()
        self.user_chars, self.assistant_chars = checks.LengthStats(), checks.LengthStats()
        self.turns: Counter[int] = Counter()
        self.examples_made = 0
        self.rejects = Hits()
        self.reject_reasons: Counter[str] = Counter()
        self.empty, self.short = Hits(), Hits()
        self.longest: list[tuple[int, int]] = []  # min-heap of (chars, line), the 50 longest
        self.languages: Counter[str] = Counter()
        self.messages: list[dict[str, str]] | None = None  # the current example's, for chat templates

    def add(self, entry: Record | BadRow) -> None:
        self.read += 1
        if isinstance(entry, BadRow):
            self.unreadable.add(entry.line)
            self.unreadable_reasons[entry.reason[:120]] += 1
            return
        if self.main_decided:
            self._observe(entry)
            return
        self.buffer.append(entry)
        if len(self.buffer) >= 200:
            self._decide_main_column()

    def _decide_main_column(self) -> None:
        """Choose the prompt-like column from the first records, then profile them."""
        self.main_decided = True
        main = self.recipe_columns.get("user") or self.recipe_columns.get("text")
        self.main_column = main[-1] if isinstance(main, list) else main  # several user columns: the body, last
        if self.main_column is None and self.make_example is None:
            self.main_column = _guess_main_column(self.buffer)
        buffered, self.buffer = self.buffer, []
        for record in buffered:
            self._observe(record)

    def _observe(self, record: Record) -> None:
        self.rows += 1
        line, fields = record.line, record.fields
        for name, value in fields.items():
            column = self.columns.get(name)
            if column is None and len(self.columns) < MAX_COLUMNS:
                column = self.columns[name] = _Column(name)
            if column is not None:
                column.add(value, line)
        if all(checks.missing_kind(v) is not None for v in fields.values()):
            self.empty.add(line)
            return
        joined = "\n".join(s for s in checks.strings_in(fields) if s.strip())
        self._scan(joined, line)
        self.records_seen.check(json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str), line)
        text, main, answer = self._texts(record, joined)
        if text is None:
            return
        self.chars.add(len(text))
        if len(self.longest) < 50:
            heapq.heappush(self.longest, (len(text), line))
        else:
            heapq.heappushpop(self.longest, (len(text), line))
        self.tokens.add(line, text, self.messages)
        checked = answer if answer is not None else main
        if len(checked.strip()) < SHORT_CHARS:
            self.short.add(line)
        if main.strip():
            if not self.texts_seen.check(main.strip(), line):
                self.near.add(main, line)
            language = checks.language_of(text)
            if language:
                self.languages[language] += 1

    def _scan(self, text: str, line: int) -> None:
        """Encoding damage, placeholders and PII hints anywhere in a record's string values."""
        for kind in encoding_problems(text):
            self.encoding[kind].add(line)
        names: dict[str, set[str]] = {"single": set(), "double": set()}
        if "{" in text:
            for placeholder in find_placeholders(text):
                kind = "double" if placeholder.kind == "double_brace" else "single"
                names[kind].add(text[placeholder.start : placeholder.end])
        for kind, found in names.items():
            if found:
                self.placeholder_rows[kind].add(line)
                self.placeholder_names[kind].update(found)
        first: dict[str, str] = {}
        for hit in find_pii(text):
            first.setdefault(hit.kind, text[hit.start : hit.end])
        for kind, value in first.items():
            self.pii.setdefault(kind, Hits()).add(line)
            samples = self.pii_samples.setdefault(kind, [])
            if len(samples) < 3:
                samples.append(checks.mask(kind, value))

    def _texts(self, record: Record, whole: str) -> tuple[str | None, str, str | None]:
        """(whole text, main text, assistant text or None) of a record; whole text None if rejected."""
        self.messages = None
        if self.make_example is None:
            main = record.fields.get(self.main_column) if self.main_column else None
            return whole, main if isinstance(main, str) else whole, None
        try:
            example = self.make_example(record)
        except RecipeError as exc:
            self.rejects.add(record.line)
            self.reject_reasons[str(exc)[:120] or "rejected"] += 1
            return None, "", None
        self.examples_made += 1
        if example.messages is None:
            text = example.text or ""
            return text, text, None
        self.turns[len(example.messages)] += 1
        user = [m.get("content", "") for m in example.messages if m.get("role") == "user"]
        assistant = [m.get("content", "") for m in example.messages if m.get("role") == "assistant"]
        self.user_chars.add(sum(map(len, user)))
        self.assistant_chars.add(sum(map(len, assistant)))
        self.messages = example.messages
        whole = "\n".join(m.get("content", "") for m in example.messages)
        return whole, user[0] if user else "", "\n".join(assistant)

    def finish(self, sample_note: str | None) -> StudyReport:
        if not self.main_decided:
            self._decide_main_column()
        self.tokens.flush()
        columns = [c.profile(self.rows) for c in self.columns.values()]
        label_column = self._label_column(columns)
        labels = _label_profiles(columns)
        suggested = _suggest_max_length(self.tokens.stats)
        return StudyReport(
            rows=self.rows,
            unreadable={**self.unreadable.to_dict(), "reasons": dict(self.unreadable_reasons.most_common(10))},
            columns=columns,
            main_text_column=self.main_column,
            recipe_columns=self.recipe_columns,
            examples=self._examples_dict(),
            duplicates={
                "records": self.records_seen.to_dict(),
                "texts": self.texts_seen.to_dict(),
                "near": self.near.to_dict(),
            },
            encoding={kind: hits.to_dict() for kind, hits in self.encoding.items()},
            placeholders={
                kind: {**hits.to_dict(), "names": dict(self.placeholder_names[kind].most_common(20))}
                for kind, hits in self.placeholder_rows.items()
            },
            pii={k: {**h.to_dict(), "samples": self.pii_samples[k]} for k, h in sorted(self.pii.items())},
            lengths={"chars": self.chars.to_dict(), "tokens": self.tokens.stats.to_dict()},
            token_counter=self.tokens.name,
            text_stats=self.tokens.text.result().to_dict(),
            max_length=self.tokens.max_length,
            truncation=self.tokens.truncation(),
            suggested_max_length=suggested,
            records={
                "empty": self.empty.to_dict(),
                "short": {**self.short.to_dict(), "min_chars": SHORT_CHARS},
                "outliers": self._outliers(),
            },
            languages=_shares(self.languages),
            labels=labels,
            label_column=label_column,
            sample_note=sample_note,
        )

    def _examples_dict(self) -> dict[str, Any] | None:
        if self.make_example is None:
            return None
        return {
            "made": self.examples_made,
            "rejected": {**self.rejects.to_dict(), "reasons": dict(self.reject_reasons.most_common(10))},
            "turns": {str(k): v for k, v in sorted(self.turns.items())},
            "user_chars": self.user_chars.to_dict(),
            "assistant_chars": self.assistant_chars.to_dict(),
        }

    def _label_column(self, columns: list[dict[str, Any]]) -> str | None:
        if self.recipe_columns.get("label"):
            return self.recipe_columns["label"]
        candidates = [c["name"] for c in columns if _is_label_like(c)]
        for wanted in _LABEL_NAMES:
            for name in candidates:
                if wanted in _words(name):
                    return name
        return candidates[0] if len(candidates) == 1 else None

    def _outliers(self) -> dict[str, Any]:
        """Records far longer than the rest: above Q3 + 3 x IQR of the character lengths."""
        if self.chars.count < 20:
            return {"method": "chars > Q3 + 3*IQR", "upper": None, "rows": 0, "lines": []}
        q1, q3 = self.chars.quantile(0.25), self.chars.quantile(0.75)
        upper = q3 + 3 * (q3 - q1)
        rows = round(self.chars.share_above(upper) * self.chars.count)
        lines = sorted(line for chars, line in self.longest if chars > upper)[:EXAMPLE_LINES]
        return {"method": "chars > Q3 + 3*IQR", "upper": round(upper, 1), "rows": rows, "lines": lines}


def _guess_main_column(records: list[Record]) -> str | None:
    """The prompt-like string column: by name first, else the one with the longest values."""
    lengths: Counter[str] = Counter()
    for record in records:
        for name, value in record.fields.items():
            if isinstance(value, str):
                lengths[name] += len(value)
    if not lengths:
        return None
    for wanted in _MAIN_NAMES:
        for name in lengths:
            if wanted in _words(name) and lengths[name] >= 5 * len(records):
                return name
    return lengths.most_common(1)[0][0]


def _words(name: str) -> list[str]:
    return re.findall(r"[a-z]+", name.lower())


def _is_label_like(column: dict[str, Any]) -> bool:
    distinct = column["distinct"]
    return (
        column["type"] in ("string", "bool")
        and distinct is not None
        and 2 <= distinct <= LABEL_MAX_DISTINCT
        and column["filled"] >= 10
        and distinct <= column["filled"] / 2
        and column["mean_chars"] <= 60
    )


def _label_profiles(columns: list[dict[str, Any]]) -> dict[str, Any]:
    profiles: dict[str, Any] = {}
    for column in columns:
        if not _is_label_like(column):
            continue
        counts = column["values"]
        profiles[column["name"]] = {
            "counts": counts,
            "distinct": len(counts),
            "imbalance_ratio": round(max(counts.values()) / max(1, min(counts.values())), 2),
        }
    return profiles


def _shares(counter: Counter[str], top: int = 8) -> list[dict[str, Any]]:
    total = sum(counter.values())
    return [{"language": k, "count": n, "share": round(n / total, 4)} for k, n in counter.most_common(top)]


def _suggest_max_length(stats: checks.LengthStats) -> dict[str, Any] | None:
    """The max_length `forge plan` would choose for these lengths (no model yet, so no context cap)."""
    if not stats.count:
        return None
    value = max_length_for(stats.quantile(0.99))[0]
    return {"value": value, "covers": round(1 - stats.share_above(value), 4)}
