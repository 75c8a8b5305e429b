"""Text damage in a row: mojibake, U+FFFD replacement characters, control characters, NUL.

One rule, two users: `forge study` counts the rows that show each kind, and `forge prepare` rejects the
rows whose text shows the kinds that would teach the model garbage (`rejected_damage`), with the same
reason words. Pure stdlib string work: it runs on every row of a large data set.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

# UTF-8 bytes read as Latin-1/cp1252: "Ã©", "â€™", "Â ", Japanese "æ—¥æœ¬"; and U+FFFD replacement characters.
_CONT = (
    "[\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013\u2014"
    "\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]"
)
_MOJIBAKE_PAIRS = re.compile(f"[\u00c2-\u00df]{_CONT}|[\u00e0-\u00ef]{_CONT}{{2}}|[\u00f0-\u00f4]{_CONT}{{3}}")
_MOJIBAKE = re.compile(f"{_MOJIBAKE_PAIRS.pattern}|\ufffd")
_C0_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # quick pre-check; C1 controls are non-ASCII

# The kinds prepare rejects a row for, with the reason written to rejects.jsonl. Other control characters
# (form feeds in documents, terminal escapes in logs) are reported by study but kept: they are often meant.
REJECTED_KINDS = {
    "nul": "contains NUL characters (U+0000): damaged or binary content",
    "replacement_chars": "contains U+FFFD replacement characters: text lost when the file was decoded",
    "mojibake": 'contains mojibake (UTF-8 read as Latin-1/cp1252, like "Ã©" or "â€™")',
}


def mojibake_score(text: str) -> float:
    """Share (0..1) of the non-ASCII characters that look like mis-decoded UTF-8 or replacement characters."""
    non_ascii = sum(1 for c in text if ord(c) > 127)
    if not non_ascii:
        return 0.0
    bad = sum(len(m.group(0)) for m in _MOJIBAKE.finditer(text))
    return min(1.0, bad / non_ascii)


def has_control_chars(text: str) -> bool:
    """True when the text holds control characters other than tab, newline and carriage return."""
    return any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in text)


def encoding_problems(text: str) -> set[str]:
    """Which of 'mojibake', 'control_chars', 'replacement_chars', 'nul' a text shows ('nul' comes with
    'control_chars': a NUL is one)."""
    found = _rejected_kinds(text)
    if (_C0_CONTROL.search(text) or "\x7f" in text or not text.isascii()) and has_control_chars(text):
        found.add("control_chars")
    return found


def rejected_damage(texts: Iterable[str]) -> str | None:
    """The reject reason for a row whose texts show damage prepare does not train on, or None."""
    for text in texts:
        kinds = _rejected_kinds(text)
        for kind, reason in REJECTED_KINDS.items():
            if kind in kinds:
                return reason
    return None


def _rejected_kinds(text: str) -> set[str]:
    """The kinds of REJECTED_KINDS in ``text``, by C-speed scans only (prepare runs this on every row)."""
    found: set[str] = set()
    if "\x00" in text:
        found.add("nul")
    if text.isascii():
        return found
    if "\ufffd" in text:
        found.add("replacement_chars")
    if _MOJIBAKE_PAIRS.search(text.replace("\ufffd", "")):  # mojibake_score(...) > 0, without the count
        found.add("mojibake")
    return found
