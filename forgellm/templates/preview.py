"""A look at exactly what the model will be trained on: text, trained spans, tokens, stop token."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from forgellm.errors import ErrorCode, ForgeError, cause

from .messages import ChatFormat, Message
from .tokens import IGNORE_INDEX, tokenize_conversation


@dataclass(frozen=True)
class TemplatePreview:
    template: str
    text: str
    trained_spans: tuple[tuple[int, int], ...]
    generation_prompt: str
    input_ids: list[int]
    labels: list[int]
    stop_strings: tuple[str, ...]

    @property
    def trained_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(tokens=len(self.input_ids), trained_tokens=self.trained_tokens)
        return data


def preview_conversation(chat_format: ChatFormat, tokenizer: Any, messages: Sequence[Message]) -> TemplatePreview:
    """Render and tokenize one conversation; the generation prompt is everything before the last answer."""
    rendered = chat_format.render(messages)
    tokens = tokenize_conversation(chat_format, tokenizer, messages)
    last_answer = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    prompt = chat_format.render_text(messages[:last_answer], add_generation_prompt=True)
    return TemplatePreview(
        chat_format.name,
        rendered.text,
        rendered.trained_spans,
        prompt,
        tokens.input_ids,
        tokens.labels,
        tuple(chat_format.stop_strings),
    )


def read_conversation(path: str | Path, row: int = 1) -> list[dict[str, Any]]:
    """Row `row` (1-based) of a JSONL file of {"messages": [...]}, or a JSON file with one conversation."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ForgeError(
            f"Cannot read {path}: {exc}.",
            fix="Check the path and that it is UTF-8 text.",
            code=ErrorCode.FILE_UNREADABLE,
            data={"path": str(path), "cause": cause(exc)},
        ) from None
    lines = [line for line in text.splitlines() if line.strip()]
    if path.suffix.lower() == ".jsonl":
        if not 1 <= row <= len(lines):
            raise ForgeError(
                f"{path} has {len(lines)} rows; there is no row {row}.",
                fix=f"Use --row 1..{len(lines)}.",
                code=ErrorCode.USAGE_INVALID,
            )
        chosen, where = lines[row - 1], f"{path}, row {row}"
    else:
        chosen, where = text, str(path)
    try:
        record = json.loads(chosen)
    except json.JSONDecodeError as exc:
        raise ForgeError(
            f"{where} is not valid JSON: {exc.msg} (column {exc.colno}).",
            fix="Each row must be one JSON object on one line.",
            code=ErrorCode.DATA_FORMAT_INVALID,
        ) from None
    messages = record.get("messages") if isinstance(record, dict) else record
    if not isinstance(messages, list):
        raise ForgeError(
            f"{where} holds no `messages` list.",
            fix='Use the OpenAI chat layout: {"messages": [{"role": "user", "content": "..."}, ...]}.',
            code=ErrorCode.DATA_FORMAT_INVALID,
        )
    return messages
