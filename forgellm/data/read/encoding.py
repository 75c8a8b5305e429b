"""Byte-level side of the readers: compression, binary detection, text-encoding detection, decoding streams."""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import itertools
import lzma
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from charset_normalizer import CharsetMatch

from forgellm.errors import ErrorCode, ForgeError

SAMPLE_BYTES = 256 * 1024  # head sample for encoding and format sniffing
_PROBE_BYTES = 64 * 1024  # extra probes spread over large uncompressed files
_NORMALIZER_BYTES = 128 * 1024  # charset-normalizer is slow on large inputs

COMPRESSIONS: dict[str, tuple[str, Callable[..., IO[bytes]]]] = {
    ".gz": ("gzip", gzip.open),
    ".bz2": ("bzip2", bz2.open),
    ".xz": ("xz", lzma.open),
}
COMPRESSIONS_BY_NAME = {name: suffix for suffix, (name, _) in COMPRESSIONS.items()}
_MAGIC_COMPRESSION = {b"\x1f\x8b": ".gz", b"BZh": ".bz2", b"\xfd7zXZ\x00": ".xz"}

# Signatures of binary formats people rename or export by mistake, with what to do instead.
_BINARY_MAGIC = {
    b"PK\x03\x04": "a ZIP archive (or an Excel .xlsx / Word .docx file)",
    b"\xd0\xcf\x11\xe0": "an old Microsoft Office file (.xls / .doc)",
    b"%PDF": "a PDF document",
    b"PAR1": "a Parquet file",
    b"SQLite format 3\x00": "an SQLite database",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
}

_BOMS = (  # longest first: the UTF-32 LE BOM starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

_NON_ASCII = re.compile(rb"[\x80-\xff]")
_TRIED = "byte-order mark, UTF-8, charset-normalizer, cp1252"
# charset-normalizer names plain Shift-JIS or JIS X 0213 for text that is cp932 (Microsoft's Shift-JIS): they
# read the same Japanese, but differ on the characters Windows users type (～ − ∥ ￠ ① ㈱ and IBM kanji).
_SHIFT_JIS = frozenset({"shift_jis", "shift_jis_2004", "shift_jisx0213"})
_PRIVATE_USE = re.compile("[\ue000-\uf8ff]")
_WESTERN = ("cp1252", "latin_1", "iso8859_15")
_WESTERN_LANGUAGES = frozenset(
    "English French Spanish German Italian Portuguese Dutch Danish Swedish Norwegian Finnish Catalan Unknown".split()
)


@dataclass(frozen=True, slots=True)
class EncodingGuess:
    """Which codec decodes a file, how sure we are (0..1) and how it was decided, in words."""

    encoding: str
    confidence: float
    how: str


def compression_of(path: Path) -> str | None:
    """The compression suffix of ``path`` ('.gz', '.bz2', '.xz'), from its name or else its first bytes."""
    suffix = path.suffix.lower()
    if suffix in COMPRESSIONS:
        return suffix
    with open(path, "rb") as f:
        head = f.read(8)
    return next((s for magic, s in _MAGIC_COMPRESSION.items() if head.startswith(magic)), None)


def open_bytes(path: Path, compression: str | None) -> IO[bytes]:
    """A binary stream of the file's (decompressed) content."""
    if compression is None:
        return open(path, "rb")
    return COMPRESSIONS[compression][1](path, "rb")


def read_sample(path: Path, compression: str | None, size: int = SAMPLE_BYTES) -> tuple[bytes, bool]:
    """The first ``size`` decompressed bytes and whether they are the whole content."""
    try:
        with open_bytes(path, compression) as f:
            data = f.read(size + 1)
    except (OSError, EOFError, lzma.LZMAError) as e:
        name = COMPRESSIONS[compression][0] if compression else "readable"
        raise ForgeError(
            f"{path.name} is not a valid {name} file ({e}).",
            fix=f"Check the file is complete and really {name}-compressed, or decompress it yourself first.",
            code=ErrorCode.DATA_FORMAT_INVALID,
        ) from e
    return data[:size], len(data) <= size


def probe_bytes(path: Path, compression: str | None, head: bytes) -> list[bytes]:
    """Chunks from the middle and the end of a large uncompressed file (cheap seeks), to check its encoding."""
    size = os.path.getsize(path)
    if compression is not None or size <= 4 * SAMPLE_BYTES:
        return []
    probes = []
    with open(path, "rb") as f:
        for fraction in (0.25, 0.5, 0.75, 1.0):
            f.seek(max(len(head), int(size * fraction) - _PROBE_BYTES))
            probes.append(f.read(_PROBE_BYTES))
    return probes


def binary_kind(sample: bytes) -> str | None:
    """What kind of binary content ``sample`` looks like, or None when it looks like text."""
    for magic, what in _BINARY_MAGIC.items():
        if sample.startswith(magic):
            return what
    if any(sample.startswith(bom) for bom, _ in _BOMS):
        return None
    if b"\x00" in sample[:8192] and _utf16_without_bom(sample) is None and _nul_lines_are_common(sample):
        return "binary data (it contains NUL bytes)"
    controls = sum(sample[:8192].count(bytes([c])) for c in range(1, 32) if c not in (9, 10, 12, 13, 27))
    if controls > 0.1 * min(len(sample), 8192):
        return "binary data (it is full of control characters)"
    return None


def _nul_lines_are_common(sample: bytes) -> bool:
    """NUL bytes on more than a quarter of the lines: binary content (whose "lines" are random cuts). Fewer:
    a text file with a few damaged rows, which the readers pass on and prepare rejects one by one, with their
    lines, as it does further in the file where no sample looks."""
    lines = sample.split(b"\n")
    return sum(b"\x00" in line for line in lines) * 4 > len(lines)


def _utf16_without_bom(sample: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' when NULs sit on every other byte, as in mostly-ASCII UTF-16 text."""
    head = sample[:4096] if len(sample) % 2 == 0 else sample[:4095]
    even, odd = head[0::2], head[1::2]
    if not even or len(head) < 4:
        return None
    for candidate, nuls, other in (("utf-16-le", odd, even), ("utf-16-be", even, odd)):
        if nuls.count(0) > 0.4 * len(nuls) and other.count(0) < 0.05 * len(other):
            try:
                text = head.decode(candidate)
            except UnicodeDecodeError:
                return None
            controls = sum(1 for c in text if c < " " and c not in "\t\n\r\f")
            return candidate if controls < 0.05 * len(text) else None
    return None


def _valid_utf8(data: bytes, *, cut_start: bool = False) -> bool:
    """Whether ``data`` is valid UTF-8, allowing a character cut at the end (and at the start of a probe)."""
    if cut_start:
        skip = 0
        while skip < min(3, len(data)) and 0x80 <= data[skip] <= 0xBF:
            skip += 1
        data = data[skip:]
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
    except UnicodeDecodeError:
        return False
    return True


def detect_encoding(sample: bytes, probes: list[bytes] | None = None, *, name: str = "the file") -> EncodingGuess:
    """Decide the codec of a text file from its head ``sample`` (and optional ``probes`` from further in).

    BOM first, then strict UTF-8 over everything sampled, then charset-normalizer, preferring cp1252
    among the near-identical single-byte Western code pages it cannot tell apart.
    """
    probes = probes or []
    for bom, encoding in _BOMS:
        if sample.startswith(bom):
            return EncodingGuess(encoding, 1.0, f"byte-order mark ({encoding})")
    utf16 = _utf16_without_bom(sample)
    if utf16:
        return EncodingGuess(utf16, 0.9, "NUL on every other byte: UTF-16 without a byte-order mark")
    if _valid_utf8(sample) and all(_valid_utf8(p, cut_start=True) for p in probes):
        where = "the first 256 KB" if not probes else f"the first 256 KB and {len(probes)} probes further in"
        return EncodingGuess("utf-8", 1.0, f"valid UTF-8 in {where}")
    # Leave out the lines that are UTF-8 with non-ASCII characters: they stay UTF-8 (per_line_decoding), and
    # in any single-byte code page they would read as mojibake and mislead the guess for the other lines.
    sample, probes = _without_utf8_lines(sample), [_without_utf8_lines(p) for p in probes]
    # Judge the bytes that are not ASCII: the head alone may be plain ASCII with the accents further in.
    odd = b"\n".join(_around_non_ascii(p, _NORMALIZER_BYTES // 4) for p in probes if not p.isascii())
    data = _without_stray_lines(odd + b"\n" + sample[: max(_NORMALIZER_BYTES - len(odd), _NORMALIZER_BYTES // 4)])
    from charset_normalizer import from_bytes

    matches = [m for m in from_bytes(data) if _decodes(data, m.encoding)]
    if matches:
        chosen = matches[0]
        encoding = codecs.lookup(chosen.encoding).name
        if _prefer_cp1252(matches, data):
            encoding = "cp1252"
        elif encoding in _SHIFT_JIS and _decodes_cp932(data):
            encoding = "cp932"
        how = f"charset-normalizer (chaos {chosen.chaos:.2f}, language {chosen.language})"
        return EncodingGuess(encoding, round(max(0.0, 1.0 - chosen.chaos), 3), how)
    if _decodes(data, "cp1252"):
        return EncodingGuess("cp1252", 0.5, "fallback: not UTF-8, charset-normalizer undecided, decodes as cp1252")
    raise ForgeError(
        f"Could not tell the text encoding of {name} (tried: {_TRIED}).",
        fix="Convert it to UTF-8, e.g. `iconv -f SHIFT_JIS -t UTF-8 input.csv > output.csv` (use the file's real "
        "encoding in place of SHIFT_JIS; `file -i input.csv` may name it), or pass the encoding explicitly.",
        code=ErrorCode.DATA_ENCODING_UNKNOWN,
    )


def _without_utf8_lines(data: bytes) -> bytes:
    """``data`` without its non-ASCII lines that are valid UTF-8 (ASCII lines stay: context for the guess)."""
    lines = data.split(b"\n")
    kept = [line for line in lines if line.isascii() or not _decodes(line, "utf-8")]
    return data if len(kept) == len(lines) else b"\n".join(kept)


def _without_stray_lines(data: bytes) -> bytes:
    """``data`` without the lines cp1252 cannot decode, when they are few (under 1 in 10 of the lines that
    are not ASCII): a line or two damaged beyond any encoding must not decide the file's code page (they
    become U+FFFD and are rejected). Many such lines mean another code page (Shift-JIS lead bytes, say): then
    every line counts. Counted among the non-ASCII lines only: a mostly-English file with a few Japanese
    lines is Shift-JIS, and its ASCII lines say nothing about the code page."""
    lines = data.split(b"\n")
    odd = [line for line in lines if not line.isascii()]
    stray = [line for line in odd if not _decodes(line, "cp1252")]
    if not stray or len(stray) * 10 >= len(odd):
        return data
    return b"\n".join(line for line in lines if line.isascii() or _decodes(line, "cp1252"))


def _prefer_cp1252(matches: list[CharsetMatch], data: bytes) -> bool:
    """Single-byte code pages decode Western text alike and charset-normalizer then picks among equals
    (cp1250, cp775...); cp1252, by far the most common, wins such ties unless the language says otherwise."""
    from charset_normalizer.utils import is_multi_byte_encoding

    best = matches[0]
    close = [m for m in matches if m.chaos <= best.chaos + 0.05]
    return (
        not is_multi_byte_encoding(best.encoding)
        and best.language in _WESTERN_LANGUAGES
        and (len(close) > 1 and (close[1].chaos == best.chaos or any(m.encoding in _WESTERN for m in close)))
        and _decodes(data, "cp1252")
    )


def _decodes_cp932(data: bytes) -> bool:
    """Whether cp932 reads ``data`` without private-use characters (its user-defined area, where JIS X 0213
    puts real characters): then cp932 it is, the Shift-JIS that Windows and Excel write."""
    try:
        text = data.decode("cp932")
    except UnicodeDecodeError:
        return False
    return not _PRIVATE_USE.search(text)


def _around_non_ascii(data: bytes, size: int) -> bytes:
    """A window of ``size`` bytes of ``data`` starting a little before its first non-ASCII byte."""
    first = _NON_ASCII.search(data)
    start = max(0, first.start() - size // 8) if first else 0
    return data[start : start + size]


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def check_encoding_name(encoding: str) -> str:
    """The canonical codec name for a user-given ``encoding``, or a ForgeError naming it."""
    try:
        return codecs.lookup(encoding).name
    except LookupError as e:
        raise ForgeError(
            f"Unknown text encoding {encoding!r}.",
            fix="Use a Python codec name such as 'utf-8', 'utf-16', 'cp1252', 'latin-1' or 'shift_jis'.",
            code=ErrorCode.DATA_ENCODING_UNKNOWN,
        ) from e


def given_encoding(encoding: str, sample: bytes) -> EncodingGuess:
    """A user-given codec; if it cannot decode the sample, bad bytes will be replaced, and we say so."""
    name = check_encoding_name(encoding)
    try:
        codecs.getincrementaldecoder(name)().decode(sample, final=False)
    except UnicodeDecodeError as e:
        return EncodingGuess(name, 0.0, f"given, but not valid {name} at byte {e.start}: bad bytes replaced by U+FFFD")
    return EncodingGuess(name, 1.0, "given")


class ReplacementCounter:
    """A decode error handler that replaces undecodable bytes with U+FFFD and counts them.

    Detection samples the file, so a stray byte further in must not abort a long read; it is replaced
    (the last resort) and counted so the caller can report it. One handler name per counter.
    """

    _ids = itertools.count()

    def __init__(self) -> None:
        self.count = 0
        self.name = f"forgellm-replace-{next(self._ids)}"
        codecs.register_error(self.name, self._handle)

    def _handle(self, error: UnicodeError) -> tuple[str, int]:
        if not isinstance(error, UnicodeDecodeError):
            raise error
        self.count += error.end - error.start
        return "\ufffd", error.end


def open_text(
    path: Path, compression: str | None, encoding: str, errors: str, *, newline: str | None = "", per_line: bool = False
) -> IO[str]:
    """A streaming text view of the (decompressed) file; ``newline=''`` keeps line ends for the csv module.
    ``per_line``: each line is read as UTF-8 when it is valid UTF-8, else as ``encoding`` (see `per_line_decoding`)."""
    raw = open_bytes(path, compression)
    if per_line:
        return io.TextIOWrapper(io.BufferedReader(_PerLineUtf8(raw, encoding)), "utf-8", errors=errors, newline=newline)
    return io.TextIOWrapper(raw, encoding=encoding, errors=errors, newline=newline)


def per_line_decoding(guess: EncodingGuess) -> bool:
    """Whether a detected single-byte code page (cp1252, latin-1, ...) is applied per line, UTF-8 first.

    Files are often concatenated from exports of different tools, so UTF-8 rows sit beside cp1252 ones;
    reading the whole file as cp1252 turns every UTF-8 row into mojibake. A cp1252 line is practically
    never valid UTF-8 (an accented letter followed by ASCII is not), so UTF-8 first costs pure files nothing.
    Multi-byte encodings (UTF-16, Shift-JIS, GB18030) are not split by line bytes, so they keep one codec."""
    from charset_normalizer.utils import is_multi_byte_encoding

    name = codecs.lookup(guess.encoding).name
    return not is_multi_byte_encoding(name) and b"{}[]\n".decode(name) == "{}[]\n"


def decode_per_line(data: bytes, fallback: str) -> str:
    """``data`` decoded line by line as `open_text(per_line=True)` does (undecodable bytes -> U+FFFD)."""
    return b"".join(_line_as_utf8(line, fallback) for line in data.splitlines(keepends=True)).decode(
        "utf-8", errors="replace"
    )


def _line_as_utf8(line: bytes, fallback: str) -> bytes:
    """The line as UTF-8: unchanged when valid UTF-8, else decoded with ``fallback``. A line neither
    decodes is passed on as it is: the reader's error handler replaces its bad bytes with U+FFFD (and
    counts them), and prepare rejects the row for them."""
    try:
        line.decode("utf-8")
        return line
    except UnicodeDecodeError:
        pass
    try:
        return line.decode(fallback).encode("utf-8")
    except UnicodeDecodeError:
        return line


class _PerLineUtf8(io.RawIOBase):
    """The bytes of a stream whose lines are UTF-8 or ``fallback``, re-encoded so every line is UTF-8."""

    def __init__(self, raw: IO[bytes], fallback: str) -> None:
        self._raw, self._fallback = raw, fallback
        self._carry = b""  # an incomplete last line, waiting for the rest
        self._out, self._at = b"", 0  # converted bytes not yet handed out, from offset _at

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while self._at >= len(self._out):
            block = self._raw.read(1 << 20)
            if not block:
                if not self._carry:
                    return 0
                self._out, self._at, self._carry = self._convert(self._carry), 0, b""
                continue
            cut = block.rfind(b"\n") + 1
            if not cut:
                self._carry += block
                continue
            self._out, self._at, self._carry = self._convert(self._carry + block[:cut]), 0, block[cut:]
        size = min(len(buffer), len(self._out) - self._at)
        buffer[:size] = memoryview(self._out)[self._at : self._at + size]
        self._at += size
        return size

    def _convert(self, lines: bytes) -> bytes:
        if lines.isascii() or _decodes(lines, "utf-8"):  # the common case: the whole block at C speed
            return lines
        return b"".join(_line_as_utf8(line, self._fallback) for line in lines.splitlines(keepends=True))

    def close(self) -> None:
        self._raw.close()
        super().close()


def count_lines_fast(path: str | os.PathLike[str]) -> int:
    """Count newline bytes in a file (decompressing .gz/.bz2/.xz): a cheap size estimate for progress bars."""
    p = Path(path)
    lines, last = 0, b"\n"
    with open_bytes(p, compression_of(p)) as f:
        while chunk := f.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")
