"""Shared types of the template package: messages, rendered conversations, the ChatFormat protocol."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from forgellm.errors import ErrorCode, ForgeError

from .families import CANONICAL_ROLES

Message = Mapping[str, Any]


@dataclass(frozen=True)
class RenderedConversation:
    """Rendered text plus the half-open character spans [start, end) that carry the loss."""

    text: str
    trained_spans: tuple[tuple[int, int], ...]

    def trained_text(self) -> str:
        return "".join(self.text[a:b] for a, b in self.trained_spans)


def merge_spans(spans: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Drop empty spans and join touching ones, so every format reports spans the same way."""
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if end <= start:
            continue
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return tuple(merged)


@runtime_checkable
class ChatFormat(Protocol):
    """What every format (builtin, tokenizer Jinja, custom Jinja) offers to the rest of Forge.

    Members are read-only properties so frozen dataclasses (and plain properties) satisfy them.
    """

    @property
    def name(self) -> str: ...

    @property
    def system_prompt(self) -> str | None:
        """The system prompt added when a conversation has none; None = none (or the template's own)."""
        ...

    @property
    def forbidden(self) -> tuple[str, ...]:
        """Control-token strings refused inside message text (see validate_messages)."""
        ...

    @property
    def add_bos(self) -> bool | None:
        """Whether the rendered text starts with the BOS text; None = unknown (Jinja): the tokenizer decides."""
        ...

    @property
    def stop_strings(self) -> tuple[str, ...]: ...

    @property
    def stop_markers(self) -> tuple[str, ...]:
        """End-of-turn / EOS strings that a trained span ends with (used for the pad == eos check)."""
        ...

    def render_text(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str: ...

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> RenderedConversation: ...


def validate_messages(messages: Sequence[Message], *, forbidden: Sequence[str] = ()) -> list[dict[str, str]]:
    """Check a conversation and return plain ``{"role", "content"}`` dicts.

    ``forbidden`` are control-token strings (e.g. ``<|im_end|>``) that must not appear inside a message:
    the tokenizer would turn them into real control tokens and silently change the conversation.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or len(messages) == 0:
        raise ForgeError(
            "The conversation is empty (or not a list of messages).",
            fix='Give a list like [{"role": "user", "content": "..."}, {"role": "assistant", ...}].',
            code=ErrorCode.CONVERSATION_INVALID,
        )
    clean: list[dict[str, str]] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping) or "role" not in msg or "content" not in msg:
            raise ForgeError(
                f"Message {i} is not a mapping with 'role' and 'content' keys: {msg!r:.80}",
                fix="Map your data columns to role/content in the recipe of forge.yaml.",
                code=ErrorCode.CONVERSATION_INVALID,
            )
        role, content = msg["role"], msg["content"]
        if role not in CANONICAL_ROLES:
            raise ForgeError(
                f"Message {i} has role {role!r}; chat templates know only system, user and assistant.",
                fix="Map other roles (e.g. 'human'/'gpt', 'tool') to user/assistant in the recipe of forge.yaml.",
                code=ErrorCode.CONVERSATION_INVALID,
            )
        if not isinstance(content, str):
            raise ForgeError(
                f"Message {i} ({role}) has non-text content of type {type(content).__name__}.",
                fix="Convert the content to a string (multimodal content is not supported).",
                code=ErrorCode.CONVERSATION_INVALID,
            )
        if role == "system" and i != 0:
            raise ForgeError(
                f"Message {i} is a system message, but a system message may only come first.",
                fix="Move the system message to the start of the conversation, or merge it into a user turn.",
                code=ErrorCode.CONVERSATION_INVALID,
            )
        for marker in forbidden:
            if marker and marker in content:
                raise ForgeError(
                    f"Message {i} ({role}) contains the control token {marker!r}, which the tokenizer "
                    "would read as a real turn marker.",
                    fix="Remove or escape control tokens such as this one in your data.",
                    code=ErrorCode.CONVERSATION_INVALID,
                )
        clean.append({"role": role, "content": content})
    if all(m["role"] == "system" for m in clean):
        raise ForgeError(
            "The conversation holds only a system message.",
            fix="Add at least one user (and, for training, one assistant) message.",
            code=ErrorCode.CONVERSATION_INVALID,
        )
    return clean


def require_assistant(messages: Sequence[Message]) -> None:
    """Training needs something to learn: at least one assistant turn."""
    if not any(m.get("role") == "assistant" for m in messages if isinstance(m, Mapping)):
        raise ForgeError(
            "The conversation has no assistant message, so there is nothing to train on.",
            fix="Drop prompt-only rows for training, or map the answer column to the assistant role.",
            code=ErrorCode.CONVERSATION_INVALID,
        )
