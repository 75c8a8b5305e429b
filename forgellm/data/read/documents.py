"""Detection for document inputs (text/markdown files): chat transcripts with speaker labels, else raw
documents for continued pre-training. No participant names are built in: labels are found by shape
(`## name` headings, `Name:` prefixes) and assigned by alternation and assistant-like names."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace

from forgellm.config.schema import RecipeSection, TranscriptSection
from forgellm.data.read.detection import Detection
from forgellm.data.read.records import Record
from forgellm.data.read.transcripts import speaker_name

_ASSISTANT_SPEAKER = re.compile(
    r"(?:^|[\s_\-.])(?:assistant|gpt|chatgpt|bot|ai|model|claude|gemini|llama|copilot|bard|mistral|qwen|agent|"
    r"support|operator|staff|a|answer|antwort|respuesta|réponse|asistente|assistent|assistente|オペレーター|"
    r"担当者?|サポート|客服|回答|助手)"
    r"(?:$|[\s_\-.\d])"
)


def detect_documents(sample: list[Record]) -> Detection:
    readings = [d for d in (_detect_transcript(sample), _detect_faq(sample)) if d is not None]
    readings.sort(key=lambda d: -d.confidence)
    plain = _documents(sample)
    if not readings:
        return plain
    # Found speakers or questions outweigh the plain reading, which stays as the alternative.
    return replace(readings[0], alternatives=[*readings[1:], replace(plain, confidence=0.5)])


_QUESTION_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+.+\?\s*#*\s*$", re.MULTILINE)
_ANY_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+\S", re.MULTILINE)


def _detect_faq(sample: list[Record]) -> Detection | None:
    """Markdown FAQs: most section headings are questions, each answered by the text under it."""
    from forgellm.data.read.transcripts import split_faq

    texts = [str(r.fields.get("text") or "") for r in sample]
    questions = sum(len(_QUESTION_HEADING.findall(t)) for t in texts)
    headings = sum(len(_ANY_HEADING.findall(t)) for t in texts)
    if questions < 3 or questions < 0.4 * headings:
        return None
    pairs = sum(sum(1 for turn in split_faq(t).turns if turn["role"] == "assistant") for t in texts)
    if pairs < 3:
        return None
    recipe = RecipeSection(columns={"text": "text"}, transcript=TranscriptSection(faq_headings=True))
    reasons = [
        f"a markdown FAQ: {questions} of {headings} headings are questions; each becomes a user turn answered by "
        f"the text under it ({pairs} question/answer pairs in the sample)"
    ]
    return Detection("transcript", recipe, 0.92 if questions >= 0.6 * headings else 0.75, reasons)


def _documents(sample: list[Record]) -> Detection:
    sizes = [len(str(r.fields.get("text") or "")) for r in sample]
    reasons = [
        f"{len(sample)} documents of free text (mean {sum(sizes) / len(sizes):.0f} characters) without "
        "recurring speaker labels: continued pre-training (training.stage: cpt)"
    ]
    return Detection("text", RecipeSection(columns={"text": "text"}), 0.9, reasons)


_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_HEADING_LABEL = re.compile(r"^(#{1,6})[ \t]+(\S(?:.{0,38}\S)?)[ \t]*$")
_COLON_LABEL = re.compile(r"^(\*\*|__)?([^\W\d][\w.' -]{0,29}?)(\*\*|__)?[ \t]*[:：](\*\*|__)?(?=\s|$|(?<=：))")


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
    found = detect_speakers([str(r.fields.get("text") or "") for r in sample])
    if found is None:
        return None
    speakers, reasons, confident = found
    recipe = RecipeSection(columns={"text": "text"}, transcript=TranscriptSection(speakers=speakers))
    warnings = [] if confident else ["check data.recipe.transcript.speakers (which label is the assistant)"]
    return Detection("transcript", recipe, 0.85 if confident else 0.65, reasons, warnings)


def detect_speakers(texts: list[str]) -> tuple[dict[str, list[str]], list[str], bool] | None:
    """The speaker labels that alternate through ``texts`` as {user: [labels], assistant: [label]}, the
    reasons, and whether the assignment is sure; None when no two labels repeat and alternate.

    The pair is chosen among the labels found in at least half of the labelled texts: the pair that
    alternates best, preferring one whose name says which is the assistant (``A:``, ``Bot:``, ``Agent:``).
    Other such labels that always come before the user's label (``table:``, ``context:``) join the user's
    turn, so what the question refers to is not dropped."""
    labelled = [_labels(text) for text in texts]
    sequences = [[_label_key(x) for x in labels] for labels in labelled]
    spelled = {_label_key(x): x for labels in labelled for x in labels}
    totals = Counter(x for seq in sequences for x in seq)
    present = Counter(x for seq in sequences for x in set(seq))
    labelled_texts = sum(1 for seq in sequences if seq)
    frequent = [x for x, n in totals.most_common(8) if n >= 2 and present[x] >= 0.5 * labelled_texts]
    best: tuple[float, str, str, float, int] | None = None
    for i, a in enumerate(frequent):
        for b in frequent[i + 1 :]:
            if a.startswith("#") != b.startswith("#"):
                continue
            pairs = [seq for seq in ([x for x in s if x in (a, b)] for s in sequences) if a in seq and b in seq]
            switches = sum(sum(1 for x, y in zip(seq, seq[1:], strict=False) if x != y) for seq in pairs)
            adjacent = sum(len(seq) - 1 for seq in pairs)
            alternation = switches / adjacent if adjacent else 0.0
            with_any = sum(1 for seq in sequences if a in seq or b in seq)
            if not pairs or alternation < 0.7 or len(pairs) < 0.5 * with_any:
                continue
            named = _assistant_named(a) != _assistant_named(b)
            # Of labels that both alternate with the assistant's, the one right before it is the speaker.
            adjacent_share = sum(sum(1 for x, y in zip(s, s[1:], strict=False) if {x, y} == {a, b})
                                 for s in sequences) / max(1, adjacent)  # fmt: skip
            score = alternation + (0.5 if named else 0.0) + 0.2 * min(1.0, adjacent_share) \
                + 0.1 * len(pairs) / max(1, len(texts))
            if best is None or score > best[0]:
                best = (score, a, b, alternation, len(pairs))
    if best is None:
        return None
    _, a, b, alternation, paired = best
    pairs = [seq for seq in ([x for x in s if x in (a, b)] for s in sequences) if a in seq and b in seq]
    user, assistant, how = _assign_speakers(a, b, pairs)
    # Only "Name:" labels join the user's turn: another markdown heading is the author's own section.
    before = [x for x in frequent if x not in (a, b) and not x.startswith("#") and not a.startswith("#")
              and all(seq.index(x) < seq.index(user) for seq in sequences if x in seq and user in seq)]  # fmt: skip
    speakers = {"user": [spelled[x] for x in (*before, user)], "assistant": [spelled[assistant]]}
    reasons = [
        f"{paired} of {len(texts)} texts alternate between the speaker labels "
        f"{spelled[a]!r} ({totals[a]}) and {spelled[b]!r} ({totals[b]}); {alternation:.0%} of turns switch",
        f"assistant = {spelled[assistant]!r} ({how}), user = {spelled[user]!r}"
        + (f" (with {', '.join(repr(spelled[x]) for x in before)} before it, in the user's turn)" if before else ""),
    ]
    return speakers, reasons, how.startswith("its name") and alternation >= 0.9


def _assistant_named(label: str) -> bool:
    return bool(_ASSISTANT_SPEAKER.search(speaker_name(label)))


def _assign_speakers(a: str, b: str, pairs: list[list[str]]) -> tuple[str, str, str]:
    """(user, assistant, why): by an assistant-like name, else the label that usually speaks second."""
    a_named, b_named = _assistant_named(a), _assistant_named(b)
    if a_named != b_named:
        return (b, a, "its name says so") if a_named else (a, b, "its name says so")
    a_first = sum(1 for seq in pairs if seq[0] == a)
    if a_first * 2 >= len(pairs):
        return a, b, "it speaks second"
    return b, a, "it speaks second"
