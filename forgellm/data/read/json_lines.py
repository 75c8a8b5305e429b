"""Streamed JSON and JSON Lines: records with the line where each starts, in bounded memory.

A JSON array is read with the stdlib decoder's ``raw_decode`` over a sliding text buffer: one item is
decoded at a time (C speed) and the newlines before it are counted, which gives exact start lines
that event-based streaming parsers (ijson) cannot report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import IO, Any

from forgellm.data.read.damage import REJECTED_KINDS
from forgellm.data.read.records import BadRow, Record
from forgellm.errors import ErrorCode, ForgeError

# Keys under which a top-level JSON object commonly holds its list of records ({"data": [...]}).
RECORD_KEYS = ("data", "rows", "records", "examples", "items", "instances", "samples", "train", "entries")
EXCERPT_CHARS = 200
_CHUNK = 1 << 20
_WS = re.compile(r"[ \t\n\r]*")
_KIND_OF_CHAR = {"[": "array", '"': "string", "t": "boolean", "f": "boolean", "n": "null"}


def json_type(value: Any) -> str:
    """'an object', 'a string', ... for messages."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _first_char_kind(char: str) -> str:
    """'string', 'number', ... from the first character of a JSON value."""
    return _KIND_OF_CHAR.get(char, "number" if char in "-0123456789" else "not JSON")


def excerpt_of(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)[:EXCERPT_CHARS]


class JsonScanner:
    """A cursor over a text stream that decodes one JSON value at a time and knows its line."""

    def __init__(self, stream: IO[str], name: str) -> None:
        self._stream = stream
        self._name = name
        self._decoder = json.JSONDecoder()
        self.buf = ""
        self.pos = 0
        self.eof = False
        self._line = 1  # line number at buf[_counted]
        self._counted = 0

    def line_at(self, index: int) -> int:
        """The 1-based line of ``buf[index]``; indexes must not go backwards."""
        self._line += self.buf.count("\n", self._counted, index)
        self._counted = index
        return self._line

    def _more(self, size: int = _CHUNK) -> bool:
        if self.eof:
            return False
        chunk = self._stream.read(size)
        if not chunk:
            self.eof = True
            return False
        if self.pos > 0:  # drop what was consumed, so memory holds one item plus one chunk
            self.line_at(self.pos)
            self.buf = self.buf[self.pos :]
            self._counted = 0
            self.pos = 0
        self.buf += chunk
        return True

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end), without consuming it."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return ""

    def expect(self, chars: str, what: str) -> str:
        char = self.peek()
        if not char or char not in chars:
            self.fail(f"expected {what}, found {char!r}" if char else f"expected {what}, found the end of the file")
        self.pos += 1
        return char

    def value(self) -> tuple[int, Any]:
        """Decode the value at the cursor; returns (start line, value)."""
        self.peek()
        start_line = self.line_at(self.pos)
        size = _CHUNK
        while True:
            try:
                value, end = self._decoder.raw_decode(self.buf, self.pos)
                # A number or literal that touches the buffer end may continue in the next chunk.
                if end < len(self.buf) or self.eof or self.buf[self.pos] in '{["':
                    self.pos = end
                    return start_line, value
            except json.JSONDecodeError as e:
                if self.eof or not (e.pos >= len(self.buf) - 16 or e.msg.startswith("Unterminated string")):
                    self.fail(e.msg, e.pos)
            self._more(size)
            size *= 2  # geometric growth keeps a 10 MB item linear to decode

    def fail(self, message: str, index: int | None = None) -> None:
        index = self.pos if index is None else index
        line = self.line_at(max(index, self._counted))
        column = index - self.buf.rfind("\n", 0, index)
        raise ForgeError(
            f"{self._name} is not valid JSON at line {line}, column {column}: {message}.",
            fix="Correct the file at that place (`python -m json.tool FILE` shows the first error).",
            code=ErrorCode.DATA_FORMAT_INVALID,
        )


def iter_json(stream: IO[str], name: str, json_key: str | None) -> Iterator[Record | BadRow]:
    """Records of a JSON array, of the array under ``json_key`` of a top-level object, or the object itself."""
    scanner = JsonScanner(stream, name)
    if scanner.peek() == "[":
        yield from _iter_array(scanner, name)
    elif json_key is None:
        line, value = scanner.value()
        yield Record(line, value, name) if isinstance(value, dict) else BadRow(line, "not an object", name)
    else:
        yield from _iter_keyed(scanner, name, json_key)
        return
    _check_end(scanner)


def _iter_keyed(scanner: JsonScanner, name: str, json_key: str) -> Iterator[Record | BadRow]:
    """The records of the array under ``json_key`` in a top-level object; other values are skipped."""
    scanner.expect("{", "'{'")
    if scanner.peek() == "}":
        return
    while True:
        _, key = scanner.value()
        scanner.expect(":", "':'")
        if key == json_key and scanner.peek() == "[":
            yield from _iter_array(scanner, name, top_level=False)
            return
        scanner.value()
        if scanner.expect(",}", "',' or '}'") == "}":
            return


def _iter_array(scanner: JsonScanner, name: str, *, top_level: bool = True) -> Iterator[Record | BadRow]:
    scanner.expect("[", "'['")
    if scanner.peek() == "]":
        scanner.pos += 1
        return
    while True:
        line, value = scanner.value()
        if isinstance(value, dict):
            yield Record(line, value, name)
        else:
            yield BadRow(line, f"array item is {json_type(value)}, not an object", name, excerpt_of(value))
        if scanner.expect(",]", "',' or ']'") == "]":
            break
    if top_level:
        _check_end(scanner)


def _check_end(scanner: JsonScanner) -> None:
    if scanner.peek():
        scanner.fail("extra data after the top-level value")


def iter_jsonl(stream: IO[str], name: str) -> Iterator[Record | BadRow]:
    """One record per non-blank line; a malformed line or a non-object becomes a BadRow and reading goes on."""
    loads = json.loads
    for number, line in enumerate(stream, 1):
        try:
            value = loads(line)
        except json.JSONDecodeError as e:
            if "\x00" in line:  # a raw NUL: damage, not a typo (the same words as prepare's damage rule)
                yield BadRow(number, REJECTED_KINDS["nul"], name, line[:EXCERPT_CHARS].replace("\x00", ""))
            elif line.strip():
                yield BadRow(number, f"invalid JSON: {e.msg} (column {e.colno})", name, line[:EXCERPT_CHARS])
            continue
        except RecursionError:  # one row nested deeper than Python can decode: that row, not the file
            yield BadRow(number, "JSON nested too deeply to read", name, line[:EXCERPT_CHARS])
            continue
        if type(value) is dict:
            yield Record(number, value, name)
        else:
            yield BadRow(number, f"valid JSON but {json_type(value)}, not an object", name, line[:EXCERPT_CHARS])


def sniff_json(text: str, whole: bool, name: str) -> tuple[str, str | None, list[str] | None]:
    """From the decoded head of a .json file: (kind 'json' or 'jsonl', records key, columns)."""
    decoder = json.JSONDecoder()
    start = _WS.match(text).end()
    char = text[start : start + 1]
    if char == "[":
        after = _WS.match(text, start + 1).end()
        first = text[after : after + 1]
        if first == "]":
            raise ForgeError(
                f"{name} is an empty JSON array: there are no records.",
                fix="Check you exported data.",
                code=ErrorCode.DATA_EMPTY,
            )
        if first and first != "{" and (after < len(text) or whole):
            raise _not_records(name, f"an array of {_first_char_kind(first)} values, not of objects")
        return "json", None, _columns_of(decoder, text, after)
    if char != "{":
        raise _not_records(name, f"{_first_char_kind(char)} value" if char else "empty")
    try:
        value, end = decoder.raw_decode(text, start)
    except json.JSONDecodeError:
        return "json", _first_key_if_records(text, start), None  # larger than the sample
    except RecursionError:  # a first line nested too deeply: one object per line is still the likely shape
        return ("jsonl" if "\n{" in text else "json"), None, jsonl_columns(text)
    if text[_WS.match(text, end).end() :].startswith("{"):
        return "jsonl", None, list(value)
    for key in value:
        if key in RECORD_KEYS and isinstance(value[key], list) and value[key] and isinstance(value[key][0], dict):
            return "json", key, list(value[key][0])
    return "json", None, list(value)


def _first_key_if_records(text: str, start: int) -> str | None:
    match = re.compile(r'\{\s*"([^"\\]+)"\s*:\s*\[\s*\{').match(text, start)
    return match.group(1) if match and match.group(1) in RECORD_KEYS else None


def _columns_of(decoder: json.JSONDecoder, text: str, index: int) -> list[str] | None:
    try:
        value, _ = decoder.raw_decode(text, index)
    except json.JSONDecodeError:
        return None
    return list(value) if isinstance(value, dict) else None


def jsonl_columns(text: str) -> list[str] | None:
    """Keys of the first object line in the sample."""
    for line in text.splitlines()[:50]:
        try:
            value = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(value, dict):
            return list(value)
    return None


def _not_records(name: str, found: str) -> ForgeError:
    return ForgeError(
        f"{name} does not hold a list of records: its top level is {found}.",
        fix='Make the top level an array of objects, one per record ([{"text": ...}, ...]), '
        "or save one JSON object per line as .jsonl.",
        code=ErrorCode.DATA_FORMAT_INVALID,
    )
