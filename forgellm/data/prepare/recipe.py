"""Applying a recipe: one raw Record -> one Example (a conversation or a document), or a RecipeError.

Decisions (the reasons of RecipeError are what users read in rejects.jsonl):
- Content is cleaned with ``recipe.cleaning`` before it is checked, so whitespace-only text counts as empty.
- Roles are mapped by ``recipe.role_map`` first, then by the built-in names below (case-insensitive).
  Role ``drop`` removes the turn. An unknown role rejects the record and names the role.
- Tool use stays text: a ``function_call`` turn (or OpenAI ``tool_calls``) becomes assistant text holding the
  call's JSON; an ``observation``/``tool``/``function`` result becomes user text. The model learns to write
  the call and to read the result; no template needs a tool role.
- Consecutive turns of the same role are merged with a blank line (templates expect alternation).
- Leading system turns are merged; a system turn later in the conversation rejects the record.
- A conversation needs a user turn before the first assistant turn and at least one assistant turn.
  Trailing user turns are dropped (nothing to learn after them) and counted in
  ``Example.extra["dropped_trailing_user_turns"]``; the record is kept when an exchange remains.
- ``recipe.system_prompt`` is added when the conversation has no system turn of its own.
"""

from __future__ import annotations

import json
from typing import Any

from forgellm.config.schema import RecipeSection
from forgellm.data.prepare.cleaning import clean_text, unescape_newlines
from forgellm.data.prepare.splits import content_key, is_synthetic
from forgellm.data.read.records import EmptyTextError, Example, Message, MissingColumnError, RecipeError, Record
from forgellm.data.read.roles import lookup_role, role_lookup
from forgellm.data.read.threads import THREAD_COLUMNS
from forgellm.data.read.transcripts import split_transcript
from forgellm.errors import ErrorCode, ForgeError

# Column names used when recipe.columns does not name one, per format.
DEFAULT_COLUMNS: dict[str, dict[str, str]] = {
    "messages": {"messages": "messages", "system": "system"},
    "sharegpt": {"messages": "conversations", "system": "system"},
    "alpaca": {
        "user": "instruction",
        "input": "input",
        "assistant": "output",
        "system": "system",
        "history": "history",
    },
    "prompt_completion": {"user": "prompt", "assistant": "completion", "system": "system"},
    "qa": {"user": "question", "assistant": "answer"},
    "text": {"text": "text"},
    "transcript": {"text": "text"},
    "classification": {"user": "text", "label": "label"},
    "preference": {"user": "prompt", "chosen": "chosen", "rejected": "rejected", "system": "system"},
    # A thread's records are linked into conversations before this module sees them (data/read/threads.py):
    # each arrives as one record whose "messages" field holds the conversation along the reply links.
    "thread": THREAD_COLUMNS,
}
# Fields a recipe must map for each format (an advisor's proposed recipe is checked against it).
REQUIRED_COLUMNS = {
    "messages": ("messages",),
    "sharegpt": ("messages",),
    "alpaca": ("user", "assistant"),
    "prompt_completion": ("user", "assistant"),
    "qa": ("user", "assistant"),
    "text": ("text",),
    "transcript": ("text",),
    "classification": ("user", "label"),
    "preference": ("chosen", "rejected"),
    "thread": ("id", "parent", "text"),
}
DEFAULT_INSTRUCTION = "Classify the following text. Answer with the label only."
FORMATS = tuple(DEFAULT_COLUMNS)


def to_example(record: Record, format: str, recipe: RecipeSection) -> Example:
    """Make an Example of ``record`` as ``format`` says; raise RecipeError with the reason when it does not fit."""
    if format not in DEFAULT_COLUMNS:
        raise ValueError(f"unknown data format {format!r}; detect it first or choose one of {', '.join(FORMATS)}")
    get = _Columns(record, format, recipe)
    extra: dict[str, Any] = {}
    if format == "text":
        text = clean_text(get.nonempty("text"), recipe.cleaning)
        return Example(record.line, record.source, text=text, label=get.label(), date=get.date())
    if format in ("messages", "sharegpt", "thread"):
        turns = _conversation_turns(get.value("messages"), format, get.column("messages"))
        tools = record.fields.get("tools")
        if tools not in (None, "", []):
            extra["tools"] = tools  # tool definitions, kept for templates that render them
    elif format == "alpaca":
        turns = [*_history_turns(get.optional("history")), _pair_user(get), ("assistant", get.nonempty("assistant"))]
    elif format == "transcript":
        try:
            split = split_transcript(get.text("text"), recipe.transcript, role_lookup(recipe))
        except ValueError as exc:  # a configuration problem, the same for every record: stop, don't reject
            raise ForgeError(
                str(exc), fix="edit data.recipe.transcript in forge.yaml", code=ErrorCode.DATA_RECIPE_MISMATCH
            ) from exc
        turns = [(t["role"], t["content"]) for t in split.turns]
        if not split.speakers_seen:
            raise RecipeError(_no_speakers(get.text("text"), recipe))
        if split.dropped:
            extra["dropped_text_chars"] = sum(len(d) for d in split.dropped)
    elif format == "classification":
        instruction = recipe.instruction or DEFAULT_INSTRUCTION
        turns = [("user", f"{instruction}\n\n{_pair_user(get)[1]}"), ("assistant", get.nonempty("label"))]
    elif format == "preference":
        turns, rejected = _preference_turns(get, recipe)
        extra["rejected"] = rejected
    else:  # prompt_completion, qa
        turns = [_pair_user(get), ("assistant", get.nonempty("assistant"))]
    system = get.optional("system")
    if system not in (None, ""):
        if not isinstance(system, str):
            raise RecipeError(f"system column {get.column('system')!r} holds {type(system).__name__}, not text")
        turns.insert(0, ("system", system))
    messages, dropped_trailing = _finish(turns, recipe)
    if dropped_trailing:
        extra["dropped_trailing_user_turns"] = dropped_trailing
    if format == "thread" and "thread" in record.fields:
        # A thread's conversations share one split (no leak): the split assigner hashes an integer key.
        extra["group"] = content_key(f"thread {record.fields['thread']}")
    if is_synthetic(record.fields):  # for the synthetic rule of splits.py
        extra["synthetic"] = True
    return Example(record.line, record.source, messages=messages, label=get.label(), date=get.date(), extra=extra)


class _Columns:
    """Field access by recipe column role, with precise errors for missing or ill-typed columns."""

    def __init__(self, record: Record, format: str, recipe: RecipeSection) -> None:
        self.fields = record.fields
        self.format = format
        self.recipe = recipe

    def column(self, key: str) -> str | None:
        name = self.recipe.columns.get(key) or DEFAULT_COLUMNS[self.format].get(key)  # type: ignore[call-overload]
        return ", ".join(name) if isinstance(name, list) else name

    def user_text(self) -> str:
        """The user column's text; several user columns form one text, each part under its column's name
        ("subject: ...", blank line, "body: ..."), empty parts left out."""
        names = self.recipe.columns.get("user")
        if not isinstance(names, list):
            return self.text("user")
        parts = []
        for name in names:
            if name not in self.fields:
                raise self._missing("user", name)
            value = self.fields[name]
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise RecipeError(f"column {name!r} (user) holds {type(value).__name__}, not text")
            parts.append((name, self.unescaped(str(value)).strip()))
        if len(parts) == 1:
            return parts[0][1]
        return "\n\n".join(f"{name}: {value}" for name, value in parts)

    def _missing(self, key: str, name: str) -> RecipeError:
        available = ", ".join(repr(k) for k in self.fields) or "none"
        where = "data.recipe.columns." + key
        return MissingColumnError(
            f"column {name!r} ({key}) is missing; available columns: {available}. Set {where}",
            column=name, role=key, available=[str(k) for k in self.fields],
        )

    def value(self, key: str) -> Any:
        name = self.column(key)
        if name is None or name not in self.fields:
            raise self._missing(key, name or "?")
        return self.fields[name]

    def optional(self, key: str) -> Any:
        """A column that may be absent unless the recipe names it explicitly."""
        name = self.column(key)
        if name is None:
            return None
        if name not in self.fields:
            if key in self.recipe.columns:
                raise self._missing(key, name)
            return None
        return self.fields[name]

    def text(self, key: str) -> str:
        value = self.value(key)
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise RecipeError(f"column {self.column(key)!r} ({key}) holds {type(value).__name__}, not text")
        return self.unescaped(str(value))

    def unescaped(self, text: str) -> str:
        """A column's own text with literal "\\n" made real when the recipe says so: per value, before texts
        are joined (a joined text has real line breaks, and then its escapes would read as meant literally)."""
        return unescape_newlines(text) if "unescape_newlines" in self.recipe.cleaning else text

    def nonempty(self, key: str) -> str:
        text = self.text(key)
        if empty_after_cleaning(text, self.recipe.cleaning):
            raise EmptyTextError(f"column {self.column(key)!r} ({key}) is empty")
        return text

    def _scalar(self, key: str) -> str | None:
        if key not in self.recipe.columns:
            return None
        value = self.optional(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return str(value).strip()

    def label(self) -> str | None:
        return self._scalar("label")

    def date(self) -> str | None:
        return self._scalar("date")


def empty_after_cleaning(text: str, steps: list[str]) -> bool:
    """Whether cleaning leaves nothing. Only HTML stripping can empty a text that has non-space characters,
    so the full cleaning runs here only then (the text is cleaned for real once, when the turn is built)."""
    if not text.strip():
        return True
    return "strip_html" in steps and not clean_text(text, steps).strip()


def _pair_user(get: _Columns) -> tuple[str, str]:
    """The user text of a pair format: the user column, plus the `input` column after a blank line."""
    user = get.user_text()
    extra_input = get.optional("input")
    if extra_input not in (None, ""):
        if not isinstance(extra_input, str | int | float) or isinstance(extra_input, bool):
            raise RecipeError(f"input column {get.column('input')!r} holds {type(extra_input).__name__}, not text")
        extra_text = get.unescaped(str(extra_input))
        user = f"{user}\n\n{extra_text}" if user.strip() else extra_text
    if empty_after_cleaning(user, get.recipe.cleaning):
        raise EmptyTextError(f"column {get.column('user')!r} (user) is empty")
    return ("user", user)


def _preference_turns(get: _Columns, recipe: RecipeSection) -> tuple[list[tuple[str, str]], list[Message]]:
    """The chosen conversation (trained) and the rejected one (kept for preference training).

    Three layouts: a prompt column with chosen/rejected replies (text, or a turn/list of turns); chosen and
    rejected as whole conversations (lists of turns); or chosen and rejected as transcripts
    ("Human: ... Assistant: ...") split with data.recipe.transcript's speakers."""
    prompt: list[tuple[str, str]] = []
    if get.optional("user") not in (None, ""):
        prompt = _pair_prompt(get, recipe)
    chosen_value, rejected_value = get.value("chosen"), get.value("rejected")
    if get.column("chosen") == get.column("rejected"):  # one column of answers ranked best first
        ranked = _decode_json(chosen_value, f"column {get.column('chosen')!r}")
        if not isinstance(ranked, list) or len(ranked) < 2:
            raise RecipeError(f"column {get.column('chosen')!r} must hold two or more answers, best first")
        chosen_value, rejected_value = ranked[0], ranked[1]
    chosen = prompt + _reply_turns(chosen_value, "assistant", get.column("chosen"), recipe)
    rejected = prompt + _reply_turns(rejected_value, "assistant", get.column("rejected"), recipe)
    try:
        rejected_messages, _ = _finish(rejected, recipe)
    except RecipeError as exc:
        raise RecipeError(f"the rejected side: {exc}") from None
    return chosen, rejected_messages


def _pair_prompt(get: _Columns, recipe: RecipeSection) -> list[tuple[str, str]]:
    """The prompt of a pair: earlier turns (alpaca ``history``), then the user column as text or turns."""
    value = get.optional("user")
    if isinstance(_maybe_json(value), list | dict):
        return _reply_turns(value, "user", get.column("user"), recipe)
    return [*_history_turns(get.optional("history")), _pair_user(get)]


def _reply_turns(value: Any, role: str, column: str | None, recipe: RecipeSection) -> list[tuple[str, str]]:
    """One side of a pair as turns: plain text is one turn of ``role`` (or a transcript when speakers are
    configured and found in it); a {role/from, content/value} object or a list of them are turns."""
    value = _maybe_json(value)
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        fmt = "sharegpt" if value and isinstance(value[0], dict) and "from" in value[0] else "messages"
        return _conversation_turns(value, fmt, column)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RecipeError(f"column {column!r} holds {type(value).__name__}, not text or turns")
    text = str(value)
    if recipe.transcript.speakers:
        try:
            split = split_transcript(text, recipe.transcript, role_lookup(recipe))
        except ValueError as exc:
            raise ForgeError(
                str(exc), fix="edit data.recipe.transcript in forge.yaml", code=ErrorCode.DATA_RECIPE_MISMATCH
            ) from exc
        if split.turns:
            return [(t["role"], t["content"]) for t in split.turns]
    if empty_after_cleaning(text, recipe.cleaning):
        raise EmptyTextError(f"column {column!r} ({role}) is empty")
    return [(role, text)]


def _maybe_json(value: Any) -> Any:
    """JSON turns in a string parsed; any other text (even one that starts with '[') stays text."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            return value
    return value


def _decode_json(value: Any, what: str) -> Any:
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise RecipeError(f"{what} is a string but not valid JSON: {exc.msg} at position {exc.pos}") from exc
    return value


def _history_turns(history: Any) -> list[tuple[str, str]]:
    """Alpaca ``history``: a list of [user, assistant] pairs that come before the instruction."""
    history = _decode_json(history, "history")
    if history in (None, "", []):
        return []
    if not isinstance(history, list):
        raise RecipeError(f"history must be a list of [user, assistant] pairs, got {type(history).__name__}")
    turns: list[tuple[str, str]] = []
    for i, pair in enumerate(history):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise RecipeError(f"history[{i}] must be a pair [user, assistant], got {_short(pair)}")
        for role, content in zip(("user", "assistant"), pair, strict=True):
            if not isinstance(content, str):
                raise RecipeError(f"history[{i}] {role} text is {type(content).__name__}, not a string")
            turns.append((role, content))
    return turns


def _conversation_turns(value: Any, format: str, column: str | None) -> list[tuple[str, str]]:
    value = _decode_json(value, f"column {column!r}")
    if not isinstance(value, list):
        raise RecipeError(f"column {column!r} must be a list of turns, got {type(value).__name__}")
    role_key, content_key = ("from", "value") if format == "sharegpt" else ("role", "content")
    turns = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise RecipeError(f"turn {i} of {column!r} is {type(turn).__name__}, expected an object")
        if role_key not in turn:
            keys = ", ".join(map(repr, turn)) or "none"
            raise RecipeError(f"turn {i} of {column!r} has no {role_key!r} key (keys: {keys})")
        turns.append((str(turn[role_key]), _turn_content(turn, content_key, i)))
    return turns


def _turn_content(turn: dict[str, Any], content_key: str, i: int) -> str:
    content = turn.get(content_key)
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        # Content parts, text only: OpenAI's {type, text}; LLaMA-Factory v1's {type, value}.
        content = "".join(str(p.get("text", p.get("value", ""))) for p in content)
    if content is None and turn.get("tool_calls"):
        content = json.dumps(turn["tool_calls"], ensure_ascii=False)
    elif content is None and turn.get("function_call"):
        content = json.dumps(turn["function_call"], ensure_ascii=False)
    if content is None:
        return ""
    if not isinstance(content, str):
        raise RecipeError(f"turn {i} {content_key!r} is {type(content).__name__}, not a string")
    return content


def _finish(raw_turns: list[tuple[str, str]], recipe: RecipeSection) -> tuple[list[Message], int]:
    """Map roles, clean, merge and validate the turns; returns the messages and the trailing user turns dropped."""
    mapping = role_lookup(recipe)
    messages: list[Message] = []
    for i, (raw_role, content) in enumerate(raw_turns):
        role = lookup_role(raw_role, mapping)
        if role == "drop":
            continue
        text = clean_text(content, recipe.cleaning)
        if not text.strip():
            raise EmptyTextError(f"turn {i} ({role}) is empty")
        if role == "system" and any(m["role"] != "system" for m in messages):
            raise RecipeError(f"turn {i} is a system turn in the middle of the conversation; only the first may be")
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n\n" + text
        else:
            messages.append({"role": role, "content": text})
    if recipe.system_prompt and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": recipe.system_prompt})
    body = [m for m in messages if m["role"] != "system"]
    if not any(m["role"] == "user" for m in body):
        raise RecipeError("no user turn: a conversation needs a user message before the assistant's reply")
    if not any(m["role"] == "assistant" for m in body):
        # Nothing to learn is an empty answer (dropped like one), not a row that breaks the format: a thread's
        # unanswered prompt, a chat export's last message.
        raise EmptyTextError("no assistant turn: nothing for the model to learn")
    if body[0]["role"] != "user":
        raise RecipeError("the conversation starts with an assistant turn; the user must speak first")
    dropped = 0
    while messages[-1]["role"] == "user":
        messages.pop()
        dropped += 1
    return messages, dropped


def _no_speakers(text: str, recipe: RecipeSection) -> str:
    """No configured speaker label starts a line: the lines seen and a setting to copy."""
    lines = [line.strip() for line in text.splitlines() if line.strip()][:2]
    configured = {role: labels for role, labels in recipe.transcript.speakers.items()} or "none"
    return (
        f"no speaker label of data.recipe.transcript.speakers ({configured}) starts a line; the first lines are "
        f"{' / '.join(_short(line, 50) for line in lines) or '(empty)'}. Set the labels the text uses, e.g. "
        "data.recipe.transcript.speakers: {user: ['Customer:'], assistant: ['Agent:']}"
    )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
