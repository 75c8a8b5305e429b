"""Format detection: a sample of records -> the data format and a recipe (which column holds what), with reasons.

Order of evidence, strongest first: structure (``messages`` lists, ShareGPT ``conversations``, Alpaca and
prompt/completion keys), then column names (question/answer-like pairs), then content (a shorter,
question-like column next to a longer one). Documents become ``transcript`` when speaker labels repeat and
alternate, else ``text``. Every guess says why, and where it is unsure, what to set in forge.yaml.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from forgellm.config.schema import RecipeSection
from forgellm.data.read.detection import Detection
from forgellm.data.read.records import Record

DOCUMENT_KINDS = frozenset({"text", "txt", "markdown", "md", "document", "documents"})
SHAREGPT_ROLES: dict[str, str] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "user",
    "tool": "user",
    "function": "user",
}
# Name hints, best first. Full-name matches beat matches of the name's last word.
_USER_NAMES = (
    "question",
    "query",
    "instruction",
    "prompt",
    "input",
    "customer",
    "request",
    "ticket description",
    "description",
    "message",
    "utterance",
    "inquiry",
    "problem",
    "issue",
    "user",
    "human",
    "q",
)
_ASSISTANT_NAMES = (
    "answer",
    "response",
    "reply",
    "output",
    "agent",
    "resolution",
    "solution",
    "completion",
    "assistant",
    "bot",
    "target",
    "a",
)
_WEAK_NAMES = frozenset({"customer", "agent", "user", "human", "assistant", "bot", "q", "a", "input", "output"})
_LABEL_NAMES = ("label", "category", "intent", "class", "topic", "type", "tag", "sentiment", "department", "queue")
_TEXT_NAMES = ("text", "content", "body", "document", "article", "passage", "markdown")
_DATE_NAMES = ("date", "created", "timestamp", "time")
_QUESTION = re.compile(
    r"\?|^(?:how|what|why|when|where|who|which|can|could|is|are|do|does|should|would|i need|"
    r"i want|please|help)\b",
    re.IGNORECASE,
)
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


@dataclass
class _Column:
    name: str
    values: list[Any]  # non-missing values
    rows: int  # rows in the sample

    @property
    def norm(self) -> str:
        return _norm(self.name)

    @property
    def strings(self) -> list[str]:
        return [v for v in self.values if isinstance(v, str)]

    @property
    def filled(self) -> float:
        return sum(1 for v in self.values if not (isinstance(v, str) and not v.strip())) / max(1, self.rows)

    @property
    def avg_len(self) -> float:
        texts = [v for v in self.strings if v.strip()]
        return sum(map(len, texts)) / len(texts) if texts else 0.0

    @property
    def distinct(self) -> int:
        return len({v.strip() for v in self.strings if v.strip()})


def _norm(name: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[_\-.]+", " ", str(name))).strip().lower()


def _columns(sample: list[Record]) -> dict[str, _Column]:
    cols: dict[str, _Column] = {}
    for record in sample:
        for key, value in record.fields.items():
            col = cols.setdefault(key, _Column(key, [], len(sample)))
            if value is not None:
                col.values.append(value)
    return cols


def _find(cols: dict[str, _Column], *names: str) -> str | None:
    by_norm = {c.norm: c.name for c in cols.values()}
    return next((by_norm[n] for n in names if n in by_norm), None)


def _as_list(value: Any) -> Any:
    if isinstance(value, str) and value.lstrip()[:1] == "[":
        try:
            return json.loads(value)
        except (json.JSONDecodeError, RecursionError):  # not a list after all, or one too deep to read
            return value
    return value


def detect_format(sample: list[Record], *, kind: str | None = None) -> Detection:
    """Guess the format of ``sample`` (a few hundred records is plenty) and a recipe for it.

    ``kind`` is the reader's kind of input (``csv``, ``jsonl``, ``markdown``, ...); document kinds lead to
    ``text`` or ``transcript``.
    """
    if not sample:
        return Detection(
            "text",
            RecipeSection(),
            0.0,
            ["the sample holds no records; nothing to detect"],
            ["set data.format and data.recipe in forge.yaml by hand, or check data.source"],
        )
    documents = (kind or "").lower() in DOCUMENT_KINDS or all(set(r.fields) <= {"text", "path"} for r in sample)
    if documents:
        from forgellm.data.read.documents import detect_documents

        return detect_documents(sample)
    cols = _columns(sample)
    for detector in (
        _detect_conversations,
        _detect_alpaca,
        _detect_prompt_completion,
        _detect_qa_by_names,
        _detect_text_column,
        _detect_qa_by_content,
    ):
        found = detector(cols)
        if found is not None:
            return _with_label_and_date(found, cols)
    names = ", ".join(map(repr, cols)) or "none"
    return Detection(
        "qa",
        RecipeSection(),
        0.1,
        [f"no known layout among the columns {names}"],
        ["set data.format and data.recipe.columns (user, assistant or text) in forge.yaml"],
    )


# ------------------------------------------------------------------------------------------ structured formats


def _detect_conversations(cols: dict[str, _Column]) -> Detection | None:
    for col in sorted(cols.values(), key=lambda c: -len(c.values)):
        lists = [v for v in map(_as_list, col.values) if isinstance(v, list) and v]
        turns = [t for lst in lists for t in lst if isinstance(t, dict)]
        if len(lists) < 0.8 * col.rows or not turns:
            continue
        if sum(1 for t in turns if "from" in t and "value" in t) >= 0.9 * len(turns):
            return _conversation_detection("sharegpt", col, [str(t["from"]) for t in turns if "from" in t], cols)
        if sum(1 for t in turns if "role" in t) >= 0.9 * len(turns):
            return _conversation_detection("messages", col, [str(t["role"]) for t in turns if "role" in t], cols)
    return None


def _conversation_detection(fmt: str, col: _Column, roles: list[str], cols: dict[str, _Column]) -> Detection:
    counts = Counter(r.strip().lower() for r in roles)
    role_map: dict[str, Any] = {}
    warnings: list[str] = []
    for raw, n in counts.items():
        target = SHAREGPT_ROLES.get(raw)
        if target is None:
            warnings.append(
                f"unknown speaker {raw!r} in {n} turns: add it to data.recipe.role_map "
                f"(user, assistant, system or drop); such records are rejected until then"
            )
        elif fmt == "sharegpt" or target != raw:
            role_map[raw] = target
    key = "from/value" if fmt == "sharegpt" else "role/content"
    seen = ", ".join(f"{r} ({n})" for r, n in counts.most_common())
    reasons = [
        f"column {col.name!r} holds lists of {{{key}}} turns in {len(col.values)} of {col.rows} records",
        f"speakers seen: {seen}",
    ]
    if role_map:
        reasons.append("role mapping: " + ", ".join(f"{k} -> {v}" for k, v in role_map.items()))
    if {"function_call", "observation", "tool", "function"} & set(counts):
        reasons.append("tool calls are trained as text: the call's JSON as assistant text, its result as user text")
    columns: dict[str, str] = {"messages": col.name}
    if (tools := _find(cols, "tools")) is not None:
        reasons.append(f"column {tools!r} holds tool definitions; kept with each example (Example.extra['tools'])")
    if (system := _find(cols, "system", "system prompt")) is not None:
        columns["system"] = system
    confidence = 0.95 if not warnings else 0.6
    return Detection(fmt, RecipeSection(columns=columns, role_map=role_map), confidence, reasons, warnings)


def _detect_alpaca(cols: dict[str, _Column]) -> Detection | None:
    instruction, output = _find(cols, "instruction"), _find(cols, "output")
    if instruction is None or output is None:
        return None
    columns = {"user": instruction, "assistant": output}
    reasons = [f"columns {instruction!r} and {output!r}: the Alpaca layout"]
    for key, names in (("input", ("input",)), ("history", ("history",)), ("system", ("system", "system prompt"))):
        if (name := _find(cols, *names)) is not None:
            columns[key] = name
            reasons.append(
                f"column {name!r} used as {key}"
                + (" (appended to the instruction after a blank line)" if key == "input" else "")
            )
    return Detection("alpaca", RecipeSection(columns=columns), 0.95, reasons)


def _detect_prompt_completion(cols: dict[str, _Column]) -> Detection | None:
    prompt, completion = _find(cols, "prompt"), _find(cols, "completion")
    if prompt is None or completion is None:
        return None
    reasons = [f"columns {prompt!r} and {completion!r}: the prompt/completion layout"]
    return Detection(
        "prompt_completion", RecipeSection(columns={"user": prompt, "assistant": completion}), 0.95, reasons
    )


# ------------------------------------------------------------------------------------------ column pairs


def _texty(col: _Column) -> bool:
    return len(col.strings) >= 0.5 * col.rows and col.avg_len >= 8


def _name_rank(col: _Column, names: tuple[str, ...]) -> tuple[int, int] | None:
    """(kind, rank): kind 0 = the whole name matches a hint, 1 = its last word does; lower is better."""
    if col.norm in names:
        return (0, names.index(col.norm))
    last = col.norm.rsplit(" ", 1)[-1]
    if " " in col.norm and last in names and last not in _WEAK_NAMES:
        return (1, names.index(last))
    return None


def _best_by_name(cols: dict[str, _Column], names: tuple[str, ...], exclude: str | None = None) -> _Column | None:
    ranked = [
        (r, -c.avg_len, c.name)
        for c in cols.values()
        if c.name != exclude and _texty(c) and (r := _name_rank(c, names)) is not None
    ]
    return cols[min(ranked)[2]] if ranked else None


def _detect_qa_by_names(cols: dict[str, _Column]) -> Detection | None:
    user = _best_by_name(cols, _USER_NAMES)
    assistant = _best_by_name(cols, _ASSISTANT_NAMES, exclude=user.name if user else None)
    if user is None or assistant is None:
        return None
    exact = _name_rank(user, _USER_NAMES)[0] == 0 and _name_rank(assistant, _ASSISTANT_NAMES)[0] == 0  # type: ignore[index]
    reasons = [f"question/answer columns found by name: user = {user.name!r}, assistant = {assistant.name!r}"]
    if (subject := _find(cols, "subject", "ticket subject", "title")) is not None:
        reasons.append(f"column {subject!r} could be added to the user text: set data.recipe.columns.input")
    warnings = _emptiness_warnings(user, assistant)
    return Detection(
        "qa",
        RecipeSection(columns={"user": user.name, "assistant": assistant.name}),
        0.9 if exact else 0.8,
        reasons,
        warnings,
    )


def _emptiness_warnings(*cols: _Column) -> list[str]:
    return [
        f"{1 - c.filled:.0%} of sampled rows have an empty {c.name!r}; those rows will be rejected"
        for c in cols
        if c.filled < 0.95
    ]


def _detect_text_column(cols: dict[str, _Column]) -> Detection | None:
    texty = [c for c in cols.values() if _texty(c) and c.distinct >= 0.5 * len(c.strings)]
    named = next((c for n in _TEXT_NAMES for c in texty if c.norm == n), None)
    if named is not None:
        return Detection(
            "text",
            RecipeSection(columns={"text": named.name}),
            0.85,
            [
                f"column {named.name!r} holds free text and no question/answer pair was found: "
                "continued pre-training on it"
            ],
        )
    long = [c for c in texty if c.avg_len >= 200]
    if len(long) == 1 and sum(1 for c in texty if c.avg_len >= 20) == 1:
        return Detection(
            "text",
            RecipeSection(columns={"text": long[0].name}),
            0.7,
            [
                f"column {long[0].name!r} is the only long text column (mean {long[0].avg_len:.0f} "
                "characters): continued pre-training on it"
            ],
            ["if these are answers to questions, set data.format: qa and data.recipe.columns"],
        )
    return None


def _question_share(col: _Column) -> float:
    texts = [s for s in col.strings if s.strip()]
    return sum(1 for s in texts if _QUESTION.search(s.strip())) / max(1, len(texts))


def _detect_qa_by_content(cols: dict[str, _Column]) -> Detection | None:
    texty = [c for c in cols.values() if _texty(c) and c.avg_len >= 15 and c.distinct >= 0.5 * len(c.strings)]
    if len(texty) < 2:
        return None
    user = max(texty, key=lambda c: (_question_share(c), -c.avg_len))
    others = [c for c in texty if c is not user and c.avg_len > user.avg_len]
    if not others:
        return None
    assistant = max(others, key=lambda c: c.avg_len)
    share = _question_share(user)
    clear = share >= 0.3 and assistant.avg_len >= 1.5 * user.avg_len
    reasons = [
        f"no known column names; by content: {user.name!r} looks like questions ({share:.0%} question-like, "
        f"mean {user.avg_len:.0f} chars) and {assistant.name!r} like answers (mean {assistant.avg_len:.0f})"
    ]
    warnings = ["guessed from content: check data.recipe.columns.user and .assistant in forge.yaml"]
    return Detection(
        "qa",
        RecipeSection(columns={"user": user.name, "assistant": assistant.name}),
        0.55 if clear else 0.35,
        reasons,
        warnings + _emptiness_warnings(user, assistant),
    )


# ------------------------------------------------------------------------------------------ label and date


def _with_label_and_date(found: Detection, cols: dict[str, _Column]) -> Detection:
    used = set(found.recipe.columns.values())
    rows = max(c.rows for c in cols.values())
    candidates = []
    for col in cols.values():
        if col.name in used or col.filled < 0.9 or not col.strings or col.avg_len > 40:
            continue
        if col.distinct > 50 or (rows >= 20 and col.distinct > rows / 2):
            continue
        rank = _name_rank(col, _LABEL_NAMES) or (_label_tail(col) if " " in col.norm else None)
        # A sample taken from a file sorted by label may show one value; only an exact name is trusted then.
        if rank is not None and (col.distinct >= 2 or rank[0] == 0):
            candidates.append((rank, col.distinct, col.name))
    reasons, columns = list(found.reasons), dict(found.recipe.columns)
    if candidates:
        candidates.sort()
        columns["label"] = candidates[0][2]
        reasons.append(
            f"label column {candidates[0][2]!r} ({candidates[0][1]} values in the sample) for stratified "
            "splits and label statistics" + _alternatives(candidates[1:])
        )
    date = _date_column(cols, used)
    if date is not None:
        columns["date"] = date
        reasons.append(f"date column {date!r} (ISO dates) for temporal splits")
    recipe = RecipeSection.model_validate({**found.recipe.model_dump(), "columns": columns})
    return Detection(found.format, recipe, found.confidence, reasons, list(found.warnings))


def _label_tail(col: _Column) -> tuple[int, int] | None:
    last = col.norm.rsplit(" ", 1)[-1]
    return (1, _LABEL_NAMES.index(last)) if last in _LABEL_NAMES else None


def _alternatives(rest: list[tuple[Any, int, str]]) -> str:
    if not rest:
        return ""
    return "; alternatives: " + ", ".join(f"{name!r} ({n} values)" for _, n, name in rest[:3])


def _date_column(cols: dict[str, _Column], used: set[str]) -> str | None:
    for hint in _DATE_NAMES:
        for col in cols.values():
            if col.name in used or hint not in col.norm.split(" ") or col.filled < 0.9:
                continue
            if sum(1 for s in col.strings if _ISO_DATE.match(s.strip())) >= 0.9 * col.rows:
                return col.name
    return None
