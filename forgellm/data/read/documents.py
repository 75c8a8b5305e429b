"""Detection for document inputs (text/markdown files): chat transcripts with speaker labels, else raw
documents for continued pre-training. No participant names are built in: labels are found by shape
(`## name` headings, `Name:` prefixes) and assigned by alternation and assistant-like names."""

from __future__ import annotations

import re
from collections import Counter

from forgellm.config.schema import RecipeSection, TranscriptSection
from forgellm.data.read.detection import Detection
from forgellm.data.read.records import Record
from forgellm.data.read.transcripts import speaker_name

_ASSISTANT_SPEAKER = re.compile(
    r"(?:^|[\s_\-.])(?:assistant|gpt|chatgpt|bot|ai|model|claude|gemini|llama|copilot|bard|mistral|qwen)"
    r"(?:$|[\s_\-.\d])"
)


def detect_documents(sample: list[Record]) -> Detection:
    return _detect_transcript(sample) or _documents(sample)


def _documents(sample: list[Record]) -> Detection:
    sizes = [len(str(r.fields.get("text") or "")) for r in sample]
    reasons = [
        f"{len(sample)} documents of free text (mean {sum(sizes) / len(sizes):.0f} characters) without "
        "recurring speaker labels: continued pre-training (training.stage: cpt)"
    ]
    return Detection("text", RecipeSection(columns={"text": "text"}), 0.9, reasons)


_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_HEADING_LABEL = re.compile(r"^(#{1,6})[ \t]+(\S(?:.{0,38}\S)?)[ \t]*$")
_COLON_LABEL = re.compile(r"^(\*\*|__)?([^\W\d][\w.' -]{0,29}?)(\*\*|__)?[ \t]*:(\*\*|__)?(?=\s|$)")


def _labels(text: str) -> list[str]:
    """Candidate speaker labels of a document, in order: ``## name`` headings and ``Name:`` line prefixes."""
    found, in_fence = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        if (m := _HEADING_LABEL.match(line)) and len(m.group(2).split()) <= 3:
            found.append(f"{m.group(1)} {m.group(2)}")
        elif (m := _COLON_LABEL.match(line)) and len(m.group(2).split()) <= 3:
            found.append(m.group(0).strip())
    return found


def _label_key(label: str) -> str:
    return label.lower()


def _detect_transcript(sample: list[Record]) -> Detection | None:
    sequences = [[_label_key(x) for x in _labels(str(r.fields.get("text") or ""))] for r in sample]
    spelled = {_label_key(x): x for r in sample for x in _labels(str(r.fields.get("text") or ""))}
    totals = Counter(x for seq in sequences for x in seq)
    top = [label for label, n in totals.most_common(2) if n >= 2]
    if len(top) < 2 or (top[0].startswith("#") != top[1].startswith("#")):
        return None
    a, b = top
    pairs = [seq for seq in ([x for x in s if x in (a, b)] for s in sequences) if a in seq and b in seq]
    switches = sum(sum(1 for x, y in zip(seq, seq[1:], strict=False) if x != y) for seq in pairs)
    adjacent = sum(len(seq) - 1 for seq in pairs)
    alternation = switches / adjacent if adjacent else 0.0
    with_any = sum(1 for seq in sequences if a in seq or b in seq)
    if not pairs or alternation < 0.7 or len(pairs) < 0.5 * with_any:
        return None
    user, assistant, how = _assign_speakers(a, b, pairs)
    speakers = {"user": [spelled[user]], "assistant": [spelled[assistant]]}
    recipe = RecipeSection(columns={"text": "text"}, transcript=TranscriptSection(speakers=speakers))
    reasons = [
        f"{len(pairs)} of {len(sample)} documents alternate between the speaker labels "
        f"{spelled[a]!r} ({totals[a]}) and {spelled[b]!r} ({totals[b]}); {alternation:.0%} of turns switch",
        f"assistant = {spelled[assistant]!r} ({how}), user = {spelled[user]!r}",
    ]
    confident = how.startswith("its name") and alternation >= 0.9
    warnings = [] if confident else ["check data.recipe.transcript.speakers (which label is the assistant)"]
    return Detection("transcript", recipe, 0.85 if confident else 0.65, reasons, warnings)


def _assign_speakers(a: str, b: str, pairs: list[list[str]]) -> tuple[str, str, str]:
    """(user, assistant, why): by an assistant-like name, else the label that usually speaks second."""
    a_named = bool(_ASSISTANT_SPEAKER.search(speaker_name(a)))
    b_named = bool(_ASSISTANT_SPEAKER.search(speaker_name(b)))
    if a_named != b_named:
        return (b, a, "its name says so") if a_named else (a, b, "its name says so")
    a_first = sum(1 for seq in pairs if seq[0] == a)
    if a_first * 2 >= len(pairs):
        return a, b, "it speaks second"
    return b, a, "it speaks second"
