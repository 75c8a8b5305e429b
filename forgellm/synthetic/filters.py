"""What a synthetic example must pass before it is kept, in this order (the first failure is its reason):

- ``invalid``: not an object of exactly the file's fields and types (shape.py), or the recipe cannot make
  a training example of it (the same `to_example` prepare applies);
- ``too_short`` / ``too_long``: its content (message contents or document) is outside the range of
  characters observed in the data, with a margin (expand.LENGTH_MARGIN: half the shortest, twice the longest);
- ``duplicate``: the same content (normalized as prepare's dedup does) as a row of the data or a kept one;
- ``near_duplicate``: MinHash similarity (prepare's neardup signature) of at least ``NEAR_THRESHOLD``
  with a row of the data or a kept example;
- ``copied``: one of its turns repeats a turn of its own seeds word for word (normalized), or at least
  ``COPY_THRESHOLD`` of its character 12-grams appear in its seeds - a seed's answer pasted under a new
  question, or a seed's question with a new answer, is not near-duplicate as a whole, but it is copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from forgellm.data.prepare.neardup import NearDuplicateIndex, content_text, minhash
from forgellm.data.prepare.recipe import to_example
from forgellm.data.prepare.splits import content_key
from forgellm.data.read.records import RecipeError, Record

REASONS = ("invalid", "too_short", "too_long", "duplicate", "near_duplicate", "copied")
NEAR_THRESHOLD = 0.8  # below prepare's default 0.9: a paraphrase of a real row adds little
COPY_THRESHOLD = 0.5
COPY_GRAM = 12  # characters: long enough that shared phrases ("Thank you for ...") are rare hits


def _normalized(text: str) -> str:
    return " ".join(text.lower().split())


def grams(text: str) -> set[str]:
    norm = _normalized(text)
    return {norm[i : i + COPY_GRAM] for i in range(max(1, len(norm) - COPY_GRAM + 1))}


def copied_share(text: str, seed_grams: set[str]) -> float:
    """The share of ``text``'s character 12-grams found in its seeds."""
    own = grams(text)
    return len(own & seed_grams) / len(own) if own else 0.0


@dataclass
class Seeds:
    """What an example may not copy from the seeds it was written from."""

    grams: set[str]
    turns: set[str]


@dataclass
class Verdict:
    reason: str | None  # one of REASONS, or None when kept
    detail: str = ""
    content: str = ""


class SyntheticFilter:
    """Holds what the data and the kept examples look like; ``check`` says whether an example may be kept."""

    def __init__(self, schema: type[BaseModel], format: str, recipe: Any, *, min_chars: int, max_chars: int) -> None:
        self.schema, self.format, self.recipe = schema, format, recipe
        self.min_chars, self.max_chars = min_chars, max_chars
        self.keys: set[int] = set()
        self.near = NearDuplicateIndex(NEAR_THRESHOLD)
        self._ids = 0

    def content(self, fields: dict[str, Any], line: int = 0) -> str:
        """The example's content as prepare compares it (RecipeError when the recipe rejects it)."""
        return content_text(self._row(fields, line))

    def _row(self, fields: dict[str, Any], line: int = 0) -> dict[str, Any]:
        example = to_example(Record(line, fields), self.format, self.recipe)
        return {"messages": example.messages} if example.messages is not None else {"text": example.text}

    def _turns(self, fields: dict[str, Any]) -> set[str]:
        row = self._row(fields)
        texts = [m["content"] for m in row["messages"] if m["role"] != "system"] if "messages" in row else [row["text"]]
        return {_normalized(t) for t in texts if t}

    def seeds(self, seed_fields: list[dict[str, Any]]) -> Seeds:
        return Seeds(
            set().union(*(grams(self.content(f)) for f in seed_fields)),
            set().union(*(self._turns(f) for f in seed_fields)),
        )

    def remember(self, text: str) -> None:
        """A row of the data, or a kept example: later ones may not repeat it."""
        self.keys.add(content_key(text))
        self._ids += 1
        self.near.add(f"synthetic:{self._ids}:0", minhash(text))

    def check(self, candidate: Any, seeds: Seeds) -> Verdict:
        if not isinstance(candidate, dict):
            return Verdict("invalid", f"a JSON {type(candidate).__name__}, not an object")
        try:
            self.schema.model_validate(candidate)
        except ValidationError as exc:
            errors = exc.errors()
            first = errors[0]
            where = f"{'.'.join(map(str, first['loc'])) or 'example'}: {first['msg']}"
            # Right shape, but a text over its column's limit (shape.py): a length problem, not a shape one.
            too_long = all(e["type"] == "string_too_long" for e in errors)
            return Verdict("too_long" if too_long else "invalid", where)
        try:
            text = self.content(candidate)
        except RecipeError as exc:
            return Verdict("invalid", f"the recipe cannot use it: {exc}")
        if len(text) < self.min_chars:
            return Verdict("too_short", f"{len(text)} characters, under the {self.min_chars} allowed", text)
        if len(text) > self.max_chars:
            return Verdict("too_long", f"{len(text)} characters, over the {self.max_chars} allowed", text)
        if content_key(text) in self.keys:
            return Verdict("duplicate", "the same content as a row of the data or a kept example", text)
        if self.near.first_match(text)[1] is not None:
            return Verdict("near_duplicate", f"MinHash similarity >= {NEAR_THRESHOLD}", text)
        if self._turns(candidate) & seeds.turns:
            return Verdict("copied", "a turn repeats one of its seeds' turns word for word", text)
        share = copied_share(text, seeds.grams)
        if share >= COPY_THRESHOLD:
            return Verdict("copied", f"{share:.0%} of its 12-character pieces come from its seeds", text)
        return Verdict(None, "", text)
