"""Chat transcripts in markdown or plain text -> turns, using the speaker labels of ``data.recipe.transcript``.

Rules (no participant names are built in; every label comes from the configuration):
- A line that starts with a speaker label opens that speaker's turn; the rest of the line is content.
  Plain labels must end at a word boundary (``## bob`` does not open a turn on ``## bobby``).
- Following lines belong to the open turn until the next label. Labels inside fenced code blocks
  (``` or ~~~) are content, not speakers.
- Text before the first label is dropped (reported in ``TranscriptTurns.dropped``).
- When the labels are markdown headings (``## name``), another heading of the same or a higher level that
  is not a speaker (``## Notes``) ends the open turn: it is the author's commentary, dropped and reported.
- Trailing thematic breaks (``---``, ``***``) are removed from a turn; empty turns are skipped.
- Consecutive turns of the same role are merged with a blank line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from forgellm.config.schema import TranscriptSection

RoleForLabel = Callable[[str], "str | None"] | Mapping[str, str] | None

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s")
_THEMATIC_BREAK = re.compile(r"^\s{0,3}([-*_])(?:\s*\1){2,}\s*$")


@dataclass(frozen=True, slots=True)
class _Speaker:
    pattern: re.Pattern[str]
    role: str
    label: str  # the configured label, for reports
    heading_level: int | None  # markdown heading level when the label is a heading (## name)


@dataclass
class TranscriptTurns:
    """The turns of one transcript plus the text that belonged to no speaker."""

    turns: list[dict[str, str]]
    dropped: list[str] = field(default_factory=list)  # preamble and non-speaker sections, as dropped
    speakers_seen: dict[str, int] = field(default_factory=dict)  # label -> turns opened


def speaker_name(label: str) -> str:
    """The bare name inside a label: ``## chatgpt`` -> ``chatgpt``, ``**User**:`` -> ``user``."""
    return re.sub(r"^[#>\s*_]+|[\s*_:>\-]+$", "", label).strip().lower()


def _compile(transcript: TranscriptSection) -> list[_Speaker]:
    flags = re.IGNORECASE if transcript.ignore_case else 0
    speakers = []
    for role, labels in transcript.speakers.items():
        for label in labels:
            if not label.strip():
                raise ValueError(f"empty speaker label for role {role!r} in data.recipe.transcript.speakers")
            if transcript.regex:
                source = label
            else:
                source = re.escape(label.strip()) + (r"(?!\w)" if re.search(r"\w$", label.strip()) else "")
            try:
                pattern = re.compile(r"^\s{0,3}(?:" + source + ")", flags)
            except re.error as exc:
                raise ValueError(f"speaker label {label!r} is not a valid regular expression: {exc}") from exc
            heading = _HEADING.match(label) if not transcript.regex else None
            speakers.append(_Speaker(pattern, role, label, len(heading.group(1)) if heading else None))
    # Longest labels first so that "## chatgpt-4" wins over "## chatgpt" where both are configured.
    return sorted(speakers, key=lambda s: -len(s.label))


def _role(speaker: _Speaker, matched: str, role_for_label: RoleForLabel) -> str | None:
    if role_for_label is None:
        return speaker.role
    name = speaker_name(matched)
    mapped = role_for_label(name) if callable(role_for_label) else role_for_label.get(name)
    return mapped or speaker.role


def _finish(lines: list[str]) -> str:
    while lines and (not lines[-1].strip() or _THEMATIC_BREAK.match(lines[-1])):
        lines.pop()
    return "\n".join(lines).strip()


def split_transcript(text: str, transcript: TranscriptSection, role_for_label: RoleForLabel = None) -> TranscriptTurns:
    """Split ``text`` into turns; see the module docstring for the rules. Roles may be ``drop``."""
    if transcript.faq_headings:
        return split_faq(text)
    speakers = _compile(transcript)
    if not speakers:
        raise ValueError("no speaker labels: set data.recipe.transcript.speakers, e.g. {user: ['## me']}")
    levels = [s.heading_level for s in speakers if s.heading_level is not None]
    section_level = max(levels) if levels and len(levels) == len(speakers) else None
    result = TranscriptTurns(turns=[])
    role: str | None = None  # None: outside any turn (preamble or commentary)
    buffer: list[str] = []
    in_fence = False

    def flush() -> None:
        content = _finish(buffer)
        if role is None:
            if content:
                result.dropped.append(content)
        elif content and role != "drop":
            if result.turns and result.turns[-1]["role"] == role:
                result.turns[-1]["content"] += "\n\n" + content
            else:
                result.turns.append({"role": role, "content": content})
        buffer.clear()

    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            hit = next(((s, m) for s in speakers if (m := s.pattern.match(line))), None)
            if hit is not None:
                flush()
                speaker, match = hit
                role = _role(speaker, match.group(0), role_for_label)
                result.speakers_seen[speaker.label] = result.speakers_seen.get(speaker.label, 0) + 1
                rest = line[match.end() :].lstrip(" \t:")
                if rest.strip():
                    buffer.append(rest)
                continue
            heading = _HEADING.match(line)
            if section_level is not None and heading and len(heading.group(1)) <= section_level:
                flush()
                role = None
        buffer.append(line)
    flush()
    return result


def extract_turns(
    text: str, transcript: TranscriptSection, role_for_label: RoleForLabel = None
) -> list[dict[str, str]]:
    """The turns ``[{role, content}, ...]`` of a transcript.

    ``role_for_label`` optionally maps a speaker's bare name (``kekyo``) to a role, overriding the role under
    which the label is configured; a mapping such as ``recipe.role_map`` or a function. ``drop`` removes
    that speaker's turns. Use :func:`split_transcript` to also get the dropped text.
    """
    return split_transcript(text, transcript, role_for_label).turns


_QUESTION_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?\?)\s*#*\s*$")


def split_faq(text: str) -> TranscriptTurns:
    """A markdown FAQ as question/answer turns: a heading ending in '?' is a user turn (the heading's text),
    the lines under it the assistant's answer, up to the next heading of the same or a higher level (deeper
    headings belong to the answer). Text outside any question is dropped and reported."""
    result = TranscriptTurns(turns=[])
    level: int | None = None  # the open question's heading level; None outside any answer
    buffer: list[str] = []
    in_fence = False

    def flush() -> None:
        content = _finish(buffer)
        if level is not None and content and result.turns and result.turns[-1]["role"] == "user":
            result.turns.append({"role": "assistant", "content": content})
        elif content:
            result.dropped.append(content)
        buffer.clear()

    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (heading := _HEADING.match(line)):
            depth = len(heading.group(1))
            if level is None or depth <= level:  # a new section: the open answer ends here
                flush()
                question = _QUESTION_HEADING.match(line)
                if question is not None:
                    if result.turns and result.turns[-1]["role"] == "user":
                        result.turns.pop()  # a question with no answer under it
                    level = depth
                    result.turns.append({"role": "user", "content": question.group(2).strip()})
                    result.speakers_seen["question heading"] = result.speakers_seen.get("question heading", 0) + 1
                else:
                    level = None
                continue
        buffer.append(line)
    flush()
    if result.turns and result.turns[-1]["role"] == "user":
        result.turns.pop()
    return result
