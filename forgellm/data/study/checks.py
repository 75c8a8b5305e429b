"""Per-value checks and bounded-memory statistics used by the data study (`forgellm.data.study.profile`).

Everything here looks at one value at a time or keeps a fixed-size summary, so a study of a file of any
size runs in bounded memory: type guesses, placeholders, encoding damage, PII hints (masked), the
Unicode script / language of a text, MinHash signatures, and a reservoir of lengths for percentiles.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

# ---------------------------------------------------------------- types of values

_NUMBER = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?([eE][+-]?\d+)?$")
_NUMBER_START = frozenset("+-.0123456789")
_BOOLS = {"true", "false", "yes", "no"}
_DATE = re.compile(
    r"^(\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?"
    r"|\d{1,2}/\d{1,2}/\d{2,4}( \d{1,2}:\d{2}(:\d{2})?)?)$"
)


def value_type(value: Any) -> str | None:
    """string/number/bool/date/list/object, or None for a missing value (None, empty, whitespace-only)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "object"
    if len(value) > 60 and not value[:1].isspace():  # long text: no need to look further
        return "string"
    text = str(value).strip()
    if not text:
        return None
    if len(text) <= 40:
        if text[0] in _NUMBER_START and text != "." and _NUMBER.match(text):
            return "number"
        if text.lower() in _BOOLS:
            return "bool"
        if text[0].isdigit() and _DATE.match(text):
            return "date"
    return "string"


def missing_kind(value: Any) -> str | None:
    """'none', 'empty' or 'whitespace' for a missing value, None for a present one."""
    if value is None:
        return "none"
    if isinstance(value, str):
        if value == "":
            return "empty"
        if not value.strip():
            return "whitespace"
    return None


def strings_in(value: Any) -> Iterator[str]:
    """Every string inside a value (nested lists and objects included, e.g. messages)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings_in(item)


# ---------------------------------------------------------------- PII hints


def mask(kind: str, value: str) -> str:
    """A value made safe to show in a report: enough to recognise the kind, never the value itself."""
    if kind == "email":
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    if kind in ("phone", "card"):
        digits = re.sub(r"\D", "", value)
        return "*" * max(0, len(digits) - 2) + digits[-2:]
    if kind == "key":
        return value[:4] + "***"
    return "***"


# ---------------------------------------------------------------- language by script

_SCRIPT_RANGES = (
    (0x0370, 0x03FF, "Greek"),
    (0x0400, 0x052F, "Cyrillic"),
    (0x0590, 0x05FF, "Hebrew"),
    (0x0600, 0x06FF, "Arabic"),
    (0x0900, 0x097F, "Devanagari"),
    (0x0E00, 0x0E7F, "Thai"),
    (0x3040, 0x30FF, "Kana"),
    (0x3400, 0x9FFF, "Han"),
    (0xAC00, 0xD7AF, "Hangul"),
)
_SCRIPT_LANGUAGE = {
    "Greek": "el",
    "Cyrillic": "cyrillic (ru, uk, ...)",
    "Hebrew": "he",
    "Arabic": "arabic script (ar, fa, ur)",
    "Devanagari": "devanagari (hi, mr, ...)",
    "Thai": "th",
    "Hangul": "ko",
    "Han": "zh",
}
# A few very frequent words tell the common Latin-script languages apart well enough for a profile.
_STOPWORDS = {
    "en": {"the", "and", "is", "to", "of", "you", "it", "in", "that", "my", "for", "this", "with", "have", "i"},
    "es": {"el", "la", "de", "que", "y", "en", "los", "es", "por", "para", "con", "una", "las", "mi", "no"},
    "fr": {"le", "la", "les", "de", "et", "est", "que", "une", "pour", "des", "dans", "pas", "je", "vous", "il"},
    "de": {"der", "die", "und", "ist", "das", "nicht", "ich", "mit", "zu", "den", "ein", "eine", "sie", "es", "auf"},
    "pt": {"o", "a", "de", "que", "e", "do", "da", "em", "um", "para", "com", "não", "uma", "os", "meu"},
    "it": {"il", "di", "che", "e", "la", "per", "un", "non", "sono", "una", "con", "del", "mi", "ho", "gli"},
}
_STOPWORD_LANGUAGES: dict[str, tuple[str, ...]] = {}
for _lang, _words in _STOPWORDS.items():
    for _word in _words:
        _STOPWORD_LANGUAGES[_word] = (*_STOPWORD_LANGUAGES.get(_word, ()), _lang)
_WORD = re.compile(r"[^\W\d_]+")


def language_of(text: str, limit: int = 400) -> str | None:
    """A language code from the dominant Unicode script (+ stopwords for Latin), None for no letters."""
    text = text[:limit]
    scripts: Counter[str] = Counter()
    if text.isascii():
        scripts["Latin"] = 1
    for ch in "" if text.isascii() else text:
        if not ch.isalpha():
            continue
        code = ord(ch)
        if code < 0x0250:
            scripts["Latin"] += 1
            continue
        for low, high, name in _SCRIPT_RANGES:
            if low <= code <= high:
                scripts[name] += 1
                break
        else:
            scripts["other"] += 1
    if not scripts:
        return None
    if scripts["Kana"]:  # kana anywhere among Han characters means Japanese
        scripts["Kana"] += scripts.pop("Han", 0)
    script = scripts.most_common(1)[0][0]
    if script == "Kana":
        return "ja"
    if script != "Latin":
        return _SCRIPT_LANGUAGE.get(script, "other")
    counts: dict[str, int] = {}
    for word in _WORD.findall(text.lower()):
        for lang in _STOPWORD_LANGUAGES.get(word, ()):
            counts[lang] = counts.get(lang, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: -item[1]) + [("", 0), ("", 0)]
    (lang, best), (_, second) = ranked[0], ranked[1]
    if best >= 3 or (best >= 1 and best > second):
        return lang
    return "latin (undetermined)"


# ---------------------------------------------------------------- lengths


class LengthStats:
    """Count, mean, min/max and a seeded reservoir of values: exact percentiles up to `capacity` rows."""

    def __init__(self, capacity: int = 100_000, seed: int = 0) -> None:
        self.capacity = capacity
        self.count = 0
        self.total = 0
        self.min: int | None = None
        self.max: int | None = None
        self.sample: list[int] = []
        self._random = random.Random(seed)

    def add(self, value: int) -> None:
        self.count += 1
        self.total += value
        self.min = value if self.min is None else min(self.min, value)
        self.max = value if self.max is None else max(self.max, value)
        if len(self.sample) < self.capacity:
            self.sample.append(value)
        else:
            slot = self._random.randrange(self.count)
            if slot < self.capacity:
                self.sample[slot] = value

    def quantile(self, q: float) -> float:
        ordered = sorted(self.sample)
        if not ordered:
            return 0.0
        position = q * (len(ordered) - 1)
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    def share_above(self, limit: float) -> float:
        """Share of values strictly above `limit` (estimated from the reservoir past its capacity)."""
        if not self.sample:
            return 0.0
        return sum(v > limit for v in self.sample) / len(self.sample)

    def histogram(self, bins: int = 20) -> dict[str, list[float]]:
        """Equal-width bins from 0 to the 99.5th percentile; the last bin also holds everything above."""
        if not self.sample:
            return {"edges": [], "counts": []}
        top = max(1.0, self.quantile(0.995))
        width = max(1, math.ceil(top / bins))
        counts = [0] * bins
        for value in self.sample:
            counts[min(bins - 1, value // width)] += 1
        scale = self.count / len(self.sample)
        return {"edges": [i * width for i in range(bins + 1)], "counts": [round(c * scale) for c in counts]}

    def to_dict(self) -> dict[str, Any]:
        if not self.count:
            return {"count": 0}
        return {
            "count": self.count,
            "mean": round(self.total / self.count, 1),
            "min": self.min,
            "p50": round(self.quantile(0.5), 1),
            "p90": round(self.quantile(0.9), 1),
            "p99": round(self.quantile(0.99), 1),
            "max": self.max,
            "sampled": self.count > len(self.sample),
            "histogram": self.histogram(),
        }
