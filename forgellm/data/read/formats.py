"""Format detection: a sample of records -> the data format and a recipe (which column holds what), with reasons.

Every detector that recognises the sample gives a reading with a confidence; the best is chosen and the
others are kept as ``Detection.alternatives`` (study shows them, plan falls back on them when a recipe
does not fit the file). Structure is the strongest evidence (``messages`` lists, ShareGPT
``conversations``, Alpaca and prompt/completion keys, chosen/rejected pairs, id/parent reply links,
speaker labels inside a column), then column names in many languages and content (``shapes.py``).
Documents become ``transcript`` when speaker labels repeat and alternate, else ``text``. Every guess says
why, and where it is unsure, what to set in forge.yaml.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from typing import Any

from forgellm.config.schema import RecipeSection
from forgellm.data.read import shapes, trees
from forgellm.data.read.columns import Column, as_list, columns_of, find
from forgellm.data.read.detection import Detection
from forgellm.data.read.records import Record
from forgellm.data.read.roles import BUILTIN_ROLES

DOCUMENT_KINDS = frozenset({"text", "txt", "markdown", "md", "document", "documents"})


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
    cols = columns_of(sample)
    found = [
        detection
        for detection in (
            _detect_conversations(cols),
            _detect_alpaca(cols),
            _detect_prompt_completion(cols),
            shapes.detect_preference(cols, sample),
            _detect_thread(sample),
            trees.detect_tree(cols),
            shapes.detect_transcript_column(cols, sample),
            shapes.detect_pair(cols),
            *shapes.detect_classification(cols),
            shapes.detect_text(cols),
        )
        if detection is not None
    ]
    if not found:
        names = ", ".join(map(repr, cols)) or "none"
        return Detection(
            "qa",
            RecipeSection(),
            0.1,
            [f"no known layout among the columns {names}: no text column pairs with an answer, a label or speakers"],
            ["set data.format and data.recipe.columns (user, assistant or text) in forge.yaml"],
        )
    ranked = sorted(found, key=lambda d: -d.confidence)  # stable: on a tie the stronger evidence (listed first)
    best, *rest = (_with_label_and_date(d, cols) for d in ranked)
    return replace(best, alternatives=rest)


def _detect_thread(sample: list[Record]) -> Detection | None:
    from forgellm.data.read.thread_detection import detect_thread

    return detect_thread(sample)


# ------------------------------------------------------------------------------------------ structured formats


def _detect_conversations(cols: dict[str, Column]) -> Detection | None:
    for col in sorted(cols.values(), key=lambda c: -len(c.values)):
        lists = [v for v in map(as_list, col.values) if isinstance(v, list) and v]
        turns = [t for lst in lists for t in lst if isinstance(t, dict)]
        if len(lists) < 0.8 * col.rows or not turns:
            continue
        if sum(1 for t in turns if "from" in t and "value" in t) >= 0.9 * len(turns):
            return _conversation_detection("sharegpt", col, [str(t["from"]) for t in turns if "from" in t], cols)
        if sum(1 for t in turns if "role" in t) >= 0.9 * len(turns):
            return _conversation_detection("messages", col, [str(t["role"]) for t in turns if "role" in t], cols)
    return None


def _conversation_detection(fmt: str, col: Column, roles: list[str], cols: dict[str, Column]) -> Detection:
    counts = Counter(r.strip().lower() for r in roles)
    role_map: dict[str, Any] = {}
    warnings: list[str] = []
    for raw, n in counts.items():
        target = BUILTIN_ROLES.get(raw)
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
    if (tools := find(cols, "tools")) is not None:
        reasons.append(f"column {tools!r} holds tool definitions; kept with each example (Example.extra['tools'])")
    if (system := find(cols, "system", "system prompt")) is not None:
        columns["system"] = system
    confidence = 0.95 if not warnings else 0.6
    return Detection(fmt, RecipeSection(columns=columns, role_map=role_map), confidence, reasons, warnings)


def _detect_alpaca(cols: dict[str, Column]) -> Detection | None:
    instruction, output = find(cols, "instruction"), find(cols, "output")
    if instruction is None or output is None:
        return None
    columns = {"user": instruction, "assistant": output}
    reasons = [f"columns {instruction!r} and {output!r}: the Alpaca layout"]
    for key, names in (("input", ("input",)), ("history", ("history",)), ("system", ("system", "system prompt"))):
        if (name := find(cols, *names)) is not None:
            columns[key] = name
            reasons.append(
                f"column {name!r} used as {key}"
                + (" (appended to the instruction after a blank line)" if key == "input" else "")
            )
    return Detection("alpaca", RecipeSection(columns=columns), 0.95, reasons)


def _detect_prompt_completion(cols: dict[str, Column]) -> Detection | None:
    prompt, completion = find(cols, "prompt"), find(cols, "completion")
    if prompt is None or completion is None:
        return None
    reasons = [f"columns {prompt!r} and {completion!r}: the prompt/completion layout"]
    return Detection(
        "prompt_completion", RecipeSection(columns={"user": prompt, "assistant": completion}), 0.95, reasons
    )


# ------------------------------------------------------------------------------------------ label and date


def _with_label_and_date(found: Detection, cols: dict[str, Column]) -> Detection:
    """Add a label column (stratified splits, label statistics) and an ISO date column (temporal splits)."""
    if found.format == "thread":
        return found  # linked conversations carry no row's label or date
    used = set(found.recipe.column_names())
    reasons, columns = list(found.reasons), dict(found.recipe.columns)
    if "label" not in columns:
        label, others = shapes.label_column(cols, used)
        if label is not None:
            columns["label"] = label.name
            also = f"; alternatives: {', '.join(repr(c.name) for c in others[:3])}" if others else ""
            reasons.append(
                f"label column {label.name!r} ({label.distinct} values in the sample) for stratified splits and "
                f"label statistics{also}"
            )
    date = _date_column(cols, used)
    if date is not None:
        columns["date"] = date
        reasons.append(f"date column {date!r} (ISO dates) for temporal splits")
    recipe = RecipeSection.model_validate({**found.recipe.model_dump(), "columns": columns})
    return replace(found, recipe=recipe, reasons=reasons)


_DATE_NAMES = ("date", "created", "timestamp", "time")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _date_column(cols: dict[str, Column], used: set[str]) -> str | None:
    for hint in _DATE_NAMES:
        for col in cols.values():
            if col.name in used or hint not in col.words or col.filled < 0.9:
                continue
            if sum(1 for s in col.texts if _ISO_DATE.match(s)) >= 0.9 * col.rows:
                return col.name
    return None
