"""Detectors for tables without a known layout: which columns form the user's side and which the answer
(by name in many languages and by content), classification data (a label next to text), preference
pairs (chosen/rejected), transcripts inside a text column, and free text for continued pre-training.

Each detector returns a Detection with a confidence, or None; ``formats.detect_format`` ranks them.
Metadata (ids, dates, URLs, numbers, names, labels) never becomes a role of the conversation: a label
column is kept as ``label`` (stratified splits), a date column as ``date``, the rest is left out and named
in the reasons so the user sees what was not used.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from forgellm.config.schema import RecipeSection, TranscriptSection
from forgellm.data.read.columns import (
    ASSISTANT_HINTS,
    CONTEXT_HINTS,
    LABEL_HINTS,
    SUBJECT_HINTS,
    TEXT_HINTS,
    USER_HINTS,
    Column,
    as_list,
    find,
)
from forgellm.data.read.detection import Detection
from forgellm.data.read.records import Record

NAMED = 0.7  # a name score at least this is evidence on its own
LABELS_IN_INSTRUCTION = 20  # list the label set in the classification request up to this many labels


def _content(cols: dict[str, Column]) -> list[Column]:
    return [c for c in cols.values() if c.texty and not c.metadata_name]


def _assistant_score(col: Column) -> float:
    return col.name_score(ASSISTANT_HINTS)


def _user_score(col: Column) -> float:
    return max(col.name_score(USER_HINTS), 0.9 * col.name_score(SUBJECT_HINTS))


def _choose_assistant(texty: list[Column]) -> tuple[Column | None, str]:
    named = [c for c in texty if _assistant_score(c) >= NAMED and _assistant_score(c) > _user_score(c)]
    if named:
        best = max(named, key=lambda c: (round(_assistant_score(c), 1), -c.markup_share, c.reply_share, c.avg_len))
        return best, "name"
    # By content: the column that reads like replies, longer than a question-like column beside it.
    asking = max(texty, key=lambda c: (c.question_share, -c.avg_len))
    others = [c for c in texty if c is not asking and c.avg_len > asking.avg_len]
    if not others:
        return None, ""
    best = max(others, key=lambda c: (c.reply_share >= 0.3, c.avg_len))
    return best, "content"


def _user_side(texty: list[Column], assistant: Column) -> tuple[list[Column], Column | None, list[Column]]:
    """(user columns in order: subjects first, then the main one; a context column; columns left out)."""
    rest = [c for c in texty if c is not assistant]
    if not rest:
        return [], None, []
    context = next((c for c in rest if c.name_score(CONTEXT_HINTS) >= NAMED), None)
    rest = [c for c in rest if c is not context]
    subjects = [c for c in rest if c.name_score(SUBJECT_HINTS) >= NAMED and c.avg_len < 200]
    candidates = [c for c in rest if c not in subjects] or subjects
    main = max(candidates,
               key=lambda c: (round(c.name_score(USER_HINTS), 1), -c.markup_share, c.question_share, c.avg_len))
    # Other user-named text joins the turn; a raw HTML copy of a clean column does not.
    extra = [c for c in candidates if c is not main and c.name_score(USER_HINTS) >= NAMED and c.avg_len >= 20
             and c.markup_share < 0.5]  # fmt: skip
    users = [c for c in subjects if c is not main] + [main] + extra
    left = [c for c in rest if c not in users]
    return users, context, left


def detect_pair(cols: dict[str, Column]) -> Detection | None:
    """A question/answer table under any naming: user side (one or several columns) and the answer."""
    texty = _content(cols)
    if len(texty) < 2:
        return None
    assistant, how = _choose_assistant(texty)
    if assistant is None:
        return None
    users, context, left = _user_side(texty, assistant)
    if not users:
        return None
    # The main user column: the one that is not a subject line (the last one when all of them are).
    main = next((c for c in users if c.name_score(SUBJECT_HINTS) < NAMED), users[-1])
    by_name = how == "name" and _user_score(main) >= NAMED
    clear = assistant.avg_len >= 1.3 * main.avg_len or assistant.reply_share >= 0.3 or main.question_share >= 0.3
    if how == "name":
        confidence = 0.9 if by_name else 0.7
    else:
        confidence = 0.55 if clear else 0.35
    columns: dict[str, Any] = {"user": [c.name for c in users] if len(users) > 1 else main.name,
                               "assistant": assistant.name}  # fmt: skip
    if context is not None:
        columns["input"] = context.name
    shown = " + ".join(repr(c.name) for c in users)
    reasons = [
        f"question/answer table: user = {shown} ({_evidence(main, USER_HINTS)}), assistant = {assistant.name!r} "
        f"({_evidence(assistant, ASSISTANT_HINTS)})"
    ]
    if len(users) > 1:
        reasons.append(f"{shown} form one user turn, each under its column name")
    if context is not None:
        reasons.append(f"column {context.name!r} is context, appended to the user turn after a blank line")
    if left:
        reasons.append("left out (not a role): " + ", ".join(repr(c.name) for c in left))
    warnings = [] if confidence >= 0.7 else ["guessed from content: check data.recipe.columns.user and .assistant"]
    warnings += _emptiness([*users, assistant])
    return Detection("qa", RecipeSection(columns=columns), confidence, reasons, warnings)


def _evidence(col: Column, hints: tuple[str, ...]) -> str:
    parts = []
    if col.name_score(hints) >= NAMED or (hints is USER_HINTS and col.name_score(SUBJECT_HINTS) >= NAMED):
        parts.append("by name")
    if hints is USER_HINTS and col.question_share >= 0.3:
        parts.append(f"{col.question_share:.0%} questions")
    if hints is ASSISTANT_HINTS and col.reply_share >= 0.2:
        parts.append(f"{col.reply_share:.0%} read like replies")
    parts.append(f"mean {col.avg_len:.0f} chars")
    return ", ".join(parts)


def _emptiness(cols: list[Column]) -> list[str]:
    return [
        f"{1 - c.filled:.0%} of sampled rows have an empty {c.name!r}; those rows will be rejected"
        for c in cols
        if c.filled < 0.95
    ]


def label_column(cols: dict[str, Column], exclude: set[str] = frozenset()) -> tuple[Column | None, list[Column]]:  # type: ignore[assignment]
    """The best label column and the other candidates: label-like content, named like a label first."""
    found = [c for c in cols.values() if c.name not in exclude and c.label_like]
    # A sample taken from a file sorted by label may show one value; an exact label name is trusted then.
    found += [c for c in cols.values() if c.name not in exclude and c not in found and c.norm in LABEL_HINTS
              and c.distinct == 1 and c.filled >= 0.9 and c.avg_len <= 40]  # fmt: skip
    found.sort(key=lambda c: (-c.name_score(LABEL_HINTS), c.distinct, c.name))
    return (found[0] if found else None), found[1:]


def detect_classification(cols: dict[str, Column]) -> list[Detection]:
    """A short label column next to text: the model learns to answer each text with its label. One reading
    per label candidate (up to three, best first), so a goal that names another label can choose it."""
    label, others = label_column(cols)
    if label is None or label.distinct < 2:
        return []
    readings = []
    for rank, candidate in enumerate([label, *[c for c in others if c.distinct >= 2]][:3]):
        reading = _classification(cols, candidate)
        if reading is not None:
            readings.append(replace(reading, confidence=round(reading.confidence - 0.05 * rank, 3)))
    return readings


def _classification(cols: dict[str, Column], label: Column) -> Detection | None:
    texty = [c for c in _content(cols) if c is not label and _assistant_score(c) < NAMED]
    if not texty:
        return None
    subjects = [c for c in texty if c.name_score(SUBJECT_HINTS) >= NAMED and c.avg_len < 200]
    bodies = [c for c in texty if c not in subjects] or subjects
    main = max(bodies, key=lambda c: (round(max(c.name_score(USER_HINTS), c.name_score(TEXT_HINTS)), 1), c.avg_len))
    users = [c for c in subjects if c is not main] + [main]
    answer_named = any(_assistant_score(c) >= NAMED for c in _content(cols))
    # With an answer column the data is a Q/A table first; classification is the goal's choice then.
    confidence = 0.5 if answer_named else (0.85 if label.name_score(LABEL_HINTS) >= NAMED else 0.7)
    values = sorted(set(label.texts))
    instruction = _instruction(main.name, values)
    columns: dict[str, Any] = {"user": [c.name for c in users] if len(users) > 1 else main.name, "label": label.name}
    reasons = [
        f"classification: {label.distinct} labels in {label.name!r} (e.g. {', '.join(map(repr, values[:4]))}) next "
        f"to text in {' + '.join(repr(c.name) for c in users)}; each example asks for the label",
    ]
    return Detection("classification", RecipeSection(columns=columns, instruction=instruction), confidence, reasons)


def _instruction(text_name: str, labels: list[str]) -> str:
    what = text_name.replace("_", " ").strip().lower() or "text"
    if what in ("text", "content", "body", "sentence", "document"):
        what = "text"
    if len(labels) <= LABELS_IN_INSTRUCTION:
        return f"Classify the following {what} as one of: {', '.join(labels)}. Answer with the label only."
    return f"Classify the following {what}. Answer with the label only."


def detect_text(cols: dict[str, Column]) -> Detection | None:
    texty = [c for c in _content(cols) if c.distinct >= 0.5 * len(c.texts)]
    named = max((c for c in texty if c.name_score(TEXT_HINTS) >= 0.9), key=lambda c: c.avg_len, default=None)
    if named is not None:
        why = f"column {named.name!r} holds free text (mean {named.avg_len:.0f} characters): continued pre-training"
        return Detection("text", RecipeSection(columns={"text": named.name}), 0.6 if len(texty) > 1 else 0.85, [why])
    long = [c for c in texty if c.avg_len >= 200]
    if len(long) == 1:
        why = (f"column {long[0].name!r} is the longest text (mean {long[0].avg_len:.0f} characters): continued "
               "pre-training on it")  # fmt: skip
        warn = ["if these are answers to questions, set data.format: qa and data.recipe.columns"]
        return Detection("text", RecipeSection(columns={"text": long[0].name}), 0.7 if len(texty) == 1 else 0.4,
                         [why], warn)  # fmt: skip
    return None


def detect_transcript_column(cols: dict[str, Column], sample: list[Record]) -> Detection | None:
    """Whole conversations inside one text column ("Human: ... Assistant: ...", "Kunde: ... Agent: ...")."""
    from forgellm.data.read.documents import detect_speakers

    for col in sorted(_content(cols), key=lambda c: -c.multiline_share):
        if col.multiline_share < 0.3:
            break
        found = detect_speakers([t for t in col.texts])
        if found is None:
            continue
        speakers, reasons, confident = found
        recipe = RecipeSection(columns={"text": col.name}, transcript=TranscriptSection(speakers=speakers))
        reasons = [f"column {col.name!r} holds whole conversations: {reasons[0]}", *reasons[1:]]
        warnings = [] if confident else ["check data.recipe.transcript.speakers (which label is the assistant)"]
        return Detection("transcript", recipe, 0.88 if confident else 0.65, reasons, warnings)
    return None


_CHOSEN = ("chosen", "preferred", "accepted", "better", "response chosen", "chosen response", "winner", "good")
_REJECTED = ("rejected", "dispreferred", "worse", "response rejected", "rejected response", "loser", "bad")
_PROMPT = ("prompt", "question", "instruction", "input", "query", "conversations", "messages", "history", "context")


def detect_preference(cols: dict[str, Column], sample: list[Record]) -> Detection | None:
    """Preference pairs: a chosen and a rejected answer (text, turns or whole transcripts), maybe a prompt."""
    chosen, rejected = find(cols, *_CHOSEN), find(cols, *_REJECTED)
    if chosen is None or rejected is None:
        return _ranked_answers(cols)
    columns: dict[str, Any] = {"chosen": chosen, "rejected": rejected}
    prompt = find(cols, *_PROMPT)
    if prompt is not None:
        columns["user"] = prompt
    reasons = [f"preference pairs: {chosen!r} (preferred) and {rejected!r} (rejected)"
               + (f" answering {prompt!r}" if prompt else "")]  # fmt: skip
    transcript = TranscriptSection()
    texts = [t for t in cols[chosen].texts if not isinstance(as_list(t), list)]
    if prompt is None and texts:
        from forgellm.data.read.documents import detect_speakers

        found = detect_speakers(texts)
        if found is None:
            return Detection("preference", RecipeSection(columns=columns), 0.5, reasons,
                             [f"{chosen!r} holds text with no prompt column and no speaker labels; set "
                              "data.recipe.columns.user to the prompt column"])  # fmt: skip
        transcript = TranscriptSection(speakers=found[0])
        reasons.append(f"each side is a whole conversation: {found[1][0]}")
    reasons.append("trained on the chosen conversation (SFT); each pair is kept in the prepared rows "
                   "(`rejected`) for preference training later")  # fmt: skip
    # Above a conversations column beside them (its last turn is the prompt the pair answers).
    return Detection("preference", RecipeSection(columns=columns, transcript=transcript), 0.97, reasons)


_RANKED = ("output", "outputs", "responses", "answers", "completions", "candidates", "ranking", "ranked")


def _ranked_answers(cols: dict[str, Column]) -> Detection | None:
    """One column of two or more answers per row, best first (LLaMA-Factory's ranking data): the first is
    chosen, the second rejected."""
    for col in cols.values():
        if col.norm not in _RANKED or col.list_share < 0.8:
            continue
        lists = [as_list(v) for v in col.values]
        if sum(1 for v in lists if isinstance(v, list) and len(v) >= 2 and all(isinstance(x, str) for x in v)) \
                < 0.8 * col.rows:
            continue
        columns: dict[str, Any] = {"chosen": col.name, "rejected": col.name}
        for key, names in (("user", _PROMPT[:5]), ("input", ("input",)), ("history", ("history",))):
            name = find(cols, *names)
            if name is not None and name not in columns.values():
                columns[key] = name
        reasons = [
            f"column {col.name!r} holds two or more answers per row, best first: the first is trained (SFT), the "
            "second kept beside it in the prepared rows (`rejected`) for preference training later"
        ]
        return Detection("preference", RecipeSection(columns=columns), 0.96, reasons)
    return None
