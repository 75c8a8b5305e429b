"""Text cleaning steps and personal-data (PII) detection and masking (text damage: forgellm.data.read.damage).

Everything here is pure, stdlib-only string work so that it can run on every record of a large data set.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Literal

CleaningStep = Literal["unicode_nfc", "strip_whitespace", "collapse_spaces", "strip_html", "unescape_newlines"]
CLEANING_STEPS: tuple[str, ...] = (
    "unicode_nfc",
    "strip_whitespace",
    "collapse_spaces",
    "strip_html",
    "unescape_newlines",
)


# --------------------------------------------------------------------------------------------- cleaning


def clean_text(text: str, steps: Iterable[str]) -> str:
    """Apply the cleaning ``steps`` in order (the names of ``data.recipe.cleaning``)."""
    for step in steps:
        if step == "unicode_nfc":
            text = unicodedata.normalize("NFC", text)
        elif step == "strip_whitespace":
            text = strip_whitespace(text)
        elif step == "collapse_spaces":
            text = collapse_spaces(text)
        elif step == "strip_html":
            text = strip_html(text)
        elif step == "unescape_newlines":
            text = unescape_newlines(text)
        else:
            raise ValueError(f"unknown cleaning step {step!r}; allowed: {', '.join(CLEANING_STEPS)}")
    return text


_NEWLINES = re.compile(r"\r\n?")


def strip_whitespace(text: str) -> str:
    """Normalise line ends to ``\\n``, drop trailing whitespace of every line and around the whole text."""
    if "\r" in text:
        text = _NEWLINES.sub("\n", text)
    if "\n" not in text:  # one line: its trailing whitespace is the text's
        return text.strip()
    # map(str.rstrip) keeps the per-line work in C: prepare cleans every message of every row
    return "\n".join(map(str.rstrip, text.split("\n"))).strip()


# Literal escapes: backslash + r backslash + n, backslash + n, backslash + t. An escaped backslash (two of
# them) is matched first, so that two backslashes and an n (a backslash, then the letter) are left as they are.
_ESCAPE = re.compile(r"\\\\|\\r\\n|\\n|\\t")
_ESCAPED = {"\\r\\n": "\n", "\\n": "\n", "\\t": "\t"}
# Where an escape is meant literally: inline code, quoted string literals on one line, Windows paths. A
# code fence's own line breaks are real ones escaped (fences are consumed whole so that their backticks do not
# pair up as inline code; inside, quoted literals still protect ``print("\\n")``). A single quote counts only
# at a word's edge: apostrophes (don't, can't) are not quotes.
_VERBATIM = re.compile(
    r"(?P<fence>```)|`[^`\n]*`|\"(?:[^\"\\\n]|\\.)*\"|(?<!\w)'(?:[^'\\\n]|\\.)*'(?!\w)|(?<![\w\\])[A-Za-z]:\\\S*|\\\\\S+",
)


def _unverbatim_escapes(text: str) -> list[re.Match[str]]:
    """The literal escapes of ``text`` outside code spans, quoted literals and paths (escaped backslashes too)."""
    spans = [m.span() for m in _VERBATIM.finditer(text) if not m["fence"]] if any(c in text for c in "`\"':") else []
    found, i = [], 0
    for m in _ESCAPE.finditer(text):
        while i < len(spans) and spans[i][1] <= m.start():
            i += 1
        if i < len(spans) and spans[i][0] <= m.start():
            continue
        found.append(m)
    return found


def has_literal_newlines(text: str) -> bool:
    """Whether ``text`` is one whose line breaks were exported as literal "\\n": it holds such an escape
    outside code and quotes, and no real line break (a text with both means its "\\n" are meant literally)."""
    if "\\" not in text or "\n" in text or "\\n" not in text:
        return False
    return any(m.group(0) != "\\\\" and "n" in m.group(0) for m in _unverbatim_escapes(text))


def unescape_newlines(text: str) -> str:
    """Literal "\\n", "\\r\\n" and "\\t" made real, in a text that `has_literal_newlines`; other texts,
    and escapes inside backticks, quoted literals (``print("\\n")``) and Windows paths, stay as they are."""
    if not has_literal_newlines(text):
        return text
    out, last = [], 0
    for m in _unverbatim_escapes(text):
        if m.group(0) in _ESCAPED:
            out += (text[last : m.start()], _ESCAPED[m.group(0)])
            last = m.end()
    return "".join(out) + text[last:]


def literal_newline_share(values: Iterable[object]) -> float:
    """Share (0..1) of the non-blank string ``values`` that `has_literal_newlines`: the planner turns the
    `unescape_newlines` cleaning step on for a column where this is high."""
    texts = [v for v in values if isinstance(v, str) and v.strip()]
    return sum(map(has_literal_newlines, texts)) / len(texts) if texts else 0.0


_INDENT = re.compile(r"^[ \t]*")
_SPACE_RUN = re.compile(r"[^\S\n]{2,}")


def collapse_spaces(text: str) -> str:
    """Collapse runs of spaces/tabs inside lines to one space; leading indentation (code) is kept."""
    out = []
    for line in text.split("\n"):
        indent = _INDENT.match(line).group(0)  # type: ignore[union-attr]  # always matches
        out.append(indent + _SPACE_RUN.sub(" ", line[len(indent) :]))
    return "\n".join(out)


_LOOKS_LIKE_HTML = re.compile(r"<[A-Za-z!/][^>]*>|&(?:#\d+|#[xX][0-9A-Fa-f]+|[A-Za-z]{2,8});")
_BLOCK_TAGS = frozenset(
    "address article aside blockquote br dd div dl dt figcaption figure footer form h1 h2 h3 h4 h5 h6 "
    "header hr li main nav ol p pre section table tbody td tfoot th thead tr ul".split()
)
_SKIPPED_TAGS = frozenset({"script", "style", "head", "title", "noscript", "template"})


class _TextExtractor(HTMLParser):
    """Keeps the text of an HTML fragment; scripts and styles are dropped, block tags become line breaks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.parts.append(data)


def strip_html(text: str) -> str:
    """Text content of HTML: tags, scripts and styles dropped, entities unescaped (stdlib html.parser).

    Text without anything that looks like a tag or an entity is returned unchanged.
    """
    if not _LOOKS_LIKE_HTML.search(text):
        return text
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)


# --------------------------------------------------------------------------------------------- PII

PiiKind = Literal["email", "phone", "card", "key", "iban"]
_MASKS: dict[str, str] = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "key": "[KEY]", "iban": "[IBAN]"}
# Where two hits overlap, the more specific kind wins.
_PRIORITY = {"key": 0, "email": 1, "iban": 2, "card": 3, "phone": 4}


@dataclass(frozen=True, slots=True)
class PiiHit:
    """One piece of personal data or secret found in a text: its kind and character span."""

    kind: PiiKind
    start: int
    end: int


_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b"
)
# International: +country code then groups; US style: (555) 123-4567 / 555-123-4567 / 555.123.4567.
# Separators are required for the US style so that order ids and long digit runs do not match.
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){1,5}(?![\w-]|\.\d)")
_PHONE_US = re.compile(
    r"(?<![\w.-])(?:1[ .-])?(?:\(\d{3}\)\s?|\d{3}[ .-])\d{3}[ .-]\d{4}(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?![\w-]|\.\d)"
)
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_KEY_PATTERN = re.compile(
    "|".join(
        (
            r"(?<![\w-])sk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_-]{20,}",  # OpenAI, Anthropic, Stripe
            r"(?<![\w-])AIza[0-9A-Za-z_-]{35}",  # Google
            r"(?<!\w)gh[pousr]_[A-Za-z0-9]{36,}",  # GitHub
            r"(?<!\w)github_pat_[A-Za-z0-9_]{22,}",
            r"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])",  # AWS access key id
            r"(?<![\w-])xox[abprs]-[A-Za-z0-9-]{10,}",  # Slack
            r"(?<![\w-])hf_[A-Za-z0-9]{30,}",  # Hugging Face
        )
    )
)
# A long token after key=/token=/secret:/Bearer; only the value is masked.
_KEY_ASSIGNMENT = re.compile(
    r"(?i)(?:\b(?:api[_-]?key|apikey|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|token|password|passwd|"
    r"client[_-]?secret|private[_-]?key)[\"']?\s*[=:]\s*[\"']?|\bBearer\s+)([A-Za-z0-9+/_.~-]{16,}={0,2})"
)
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])")
_DIGIT = re.compile(r"\d")
# Issuer prefixes of payment cards (Visa, Mastercard, Amex, Diners, Discover, JCB, UnionPay, Maestro).
_CARD_PREFIX = re.compile(r"^(?:4|5[0-5]|2[2-7]|3[0478]|35|6)")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits (payment card numbers satisfy it)."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_valid(candidate: str) -> bool:
    s = candidate.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _looks_like_secret(value: str) -> bool:
    if re.fullmatch(r"[0-9a-fA-F]{32,}", value):
        return True
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    return len(value) >= 16 and has_digit and has_alpha and not re.fullmatch(r"[a-z_.-]+\d{0,2}", value)


def _candidates(text: str) -> list[PiiHit]:
    hits = [PiiHit("email", m.start(), m.end()) for m in _EMAIL.finditer(text)] if "@" in text else []
    hits += [PiiHit("key", m.start(), m.end()) for m in _KEY_PATTERN.finditer(text)]
    for m in _KEY_ASSIGNMENT.finditer(text):
        if _looks_like_secret(m.group(1)):
            hits.append(PiiHit("key", m.start(1), m.end(1)))
    if not _DIGIT.search(text):
        return hits
    for m in _IBAN.finditer(text):
        if _iban_valid(m.group(0)):
            hits.append(PiiHit("iban", m.start(), m.end()))
    for m in _CARD.finditer(text):
        digits = re.sub(r"[ -]", "", m.group(0))
        if 13 <= len(digits) <= 19 and _CARD_PREFIX.match(digits) and luhn_valid(digits):
            hits.append(PiiHit("card", m.start(), m.end()))
    for pattern in (_PHONE_INTL, _PHONE_US):
        for m in pattern.finditer(text):
            digits = sum(c.isdigit() for c in m.group(0))
            if 7 <= digits <= 15:
                hits.append(PiiHit("phone", m.start(), m.end()))
    return hits


def find_pii(text: str) -> list[PiiHit]:
    """Emails, phone numbers, Luhn-valid card numbers, API keys/secrets and IBANs, sorted, not overlapping."""
    chosen: list[PiiHit] = []
    for hit in sorted(_candidates(text), key=lambda h: (_PRIORITY[h.kind], -(h.end - h.start), h.start)):
        if all(hit.end <= c.start or hit.start >= c.end for c in chosen):
            chosen.append(hit)
    return sorted(chosen, key=lambda h: h.start)


def mask_pii(text: str) -> str:
    """Replace every PII hit with ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[KEY]`` or ``[IBAN]``."""
    # Masking can expose a match that a neighbour hid (lookbehinds, overlaps); repeat until none is left.
    # Each pass removes at least one character that a pattern needs, so this ends; the cap is a safety net.
    for _ in range(1000):
        hits = find_pii(text)
        if not hits:
            break
        for hit in reversed(hits):
            text = text[: hit.start] + _MASKS[hit.kind] + text[hit.end :]
    return text


# --------------------------------------------------------------------------------------------- placeholders

PlaceholderKind = Literal["double_brace", "single_brace"]


@dataclass(frozen=True, slots=True)
class Placeholder:
    """A template placeholder left in the text.

    ``double_brace`` (``{{Order Number}}``) is usually deliberate anonymisation (Bitext data): informational.
    ``single_brace`` (``{product_purchased}``) is usually a template that was never filled in: a warning.
    """

    kind: PlaceholderKind
    name: str
    start: int
    end: int


_DOUBLE = re.compile(r"\{\{\s*([^{}\n]{1,80}?)\s*\}\}")
_SINGLE = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*(?:[ .-][A-Za-z0-9_]+){0,4})\}(?!\})")


def find_placeholders(text: str) -> list[Placeholder]:
    """Unfilled template placeholders, ``{{...}}`` and ``{name}``, in order of appearance."""
    found = [Placeholder("double_brace", m.group(1), m.start(), m.end()) for m in _DOUBLE.finditer(text)]
    found += [Placeholder("single_brace", m.group(1), m.start(), m.end()) for m in _SINGLE.finditer(text)]
    return sorted(found, key=lambda p: p.start)
