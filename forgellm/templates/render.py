"""The one generic renderer for builtin families: a TemplateSpec plus resolved parameters -> text + spans."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from forgellm.errors import ErrorCode, ForgeError

from .families import TemplateSpec
from .messages import Message, RenderedConversation, merge_spans, validate_messages

_PLACEHOLDER = re.compile(r"\{(role|content|bos|eos|system|user)\}")


@lru_cache(maxsize=256)
def _pieces(fmt: str) -> tuple[tuple[str, str | None], ...]:
    """A format string as (literal, None) and (placeholder text, name) pieces, parsed once per format."""
    pieces: list[tuple[str, str | None]] = []
    last = 0
    for match in _PLACEHOLDER.finditer(fmt):
        pieces.append((fmt[last : match.start()], None))
        pieces.append((match.group(0), match.group(1)))
        last = match.end()
    pieces.append((fmt[last:], None))
    return tuple(piece for piece in pieces if piece[0])


def fill(fmt: str, values: Mapping[str, str]) -> str:
    """Substitute placeholders in one pass, so braces inside message text are never re-read.

    The format is parsed once (cached): prepare fills several formats for every row it renders.
    """
    return "".join(text if name is None else values.get(name, text) for text, name in _pieces(fmt))


@dataclass(frozen=True)
class BuiltinChatFormat:
    """A builtin family with its parameters resolved (BOS/EOS text, system prompt, role names)."""

    spec: TemplateSpec
    bos_text: str  # "" when no BOS is added
    eos_text: str
    system_prompt: str | None  # used when the conversation has no system message; None = none
    role_names: Mapping[str, str]
    # Control-token strings refused inside message text (see validate_messages).
    forbidden: tuple[str, ...] = field(default=())
    # Set when this builtin stands in for a Jinja template that renders identically ("tokenizer"):
    # the name to show, and the original template, which exports keep verbatim.
    label: str | None = None
    source_template: str | None = None

    @property
    def name(self) -> str:
        return self.label or self.spec.name

    def _fill(self, fmt: str, role: str = "", content: str = "") -> str:
        values = {"bos": self.bos_text, "eos": self.eos_text, "content": content}
        if role:
            values["role"] = self.role_names[role]
        return fill(fmt, values)

    @property
    def add_bos(self) -> bool:
        return bool(self.bos_text)

    @property
    def stop_strings(self) -> tuple[str, ...]:
        resolved = (self._fill(s) for s in self.spec.stop)
        return tuple(dict.fromkeys(s for s in resolved if s))

    @property
    def stop_markers(self) -> tuple[str, ...]:
        eot = self._fill(self.spec.end_of_turn).strip()
        return tuple(dict.fromkeys(s for s in (eot, self.eos_text) if s))

    @property
    def generation_prompt(self) -> str:
        gp = self.spec.generation_prompt
        return self._fill(self.spec.assistant_prefix if gp is None else gp, role="assistant")

    def render_text(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        return self.render(messages, add_generation_prompt).text

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> RenderedConversation:
        parts = self._parts(validate_messages(messages, forbidden=self.forbidden), add_generation_prompt)
        spans: list[tuple[int, int]] = []
        pos = 0
        for piece, trained in parts:
            if trained:
                spans.append((pos, pos + len(piece)))
            pos += len(piece)
        # Content and its end-of-turn are adjacent: merge_spans joins them into one span.
        return RenderedConversation("".join(p for p, _ in parts), merge_spans(spans))

    def _parts(self, msgs: list[dict[str, str]], add_generation_prompt: bool) -> list[tuple[str, bool]]:
        spec = self.spec
        system: str | None = self.system_prompt
        if msgs[0]["role"] == "system":
            system, msgs = msgs[0]["content"], msgs[1:]
        fold = system is not None and spec.system_handling == "fold_into_first_user"
        if fold and msgs[0]["role"] != "user":
            raise ForgeError(
                f"The {spec.name} template folds the system prompt into the first user turn, "
                "but the conversation starts with an assistant turn.",
                fix="Start the conversation with a user message, or drop the system prompt.",
                code=ErrorCode.CONVERSATION_INVALID,
            )
        parts: list[tuple[str, bool]] = [(self._fill(spec.conversation_prefix), False)]
        if system is not None and not fold:
            assert spec.system_format is not None, "native system handling needs a system_format"
            parts.append((self._fill(spec.system_format, "system", system), False))
        last = len(msgs) - 1
        for i, msg in enumerate(msgs):
            content = msg["content"]
            if msg["role"] == "user":
                if fold and i == 0:
                    content = fill(spec.fold_format, {"system": system or "", "user": content})
                parts.append((self._fill(spec.user_format, "user", content), False))
                continue
            parts.append((self._fill(spec.assistant_prefix, "assistant"), False))
            parts.append((content, True))
            parts.append((self._fill(spec.end_of_turn), True))
            if i < last or spec.separator_after_last or add_generation_prompt:
                parts.append((self._fill(spec.separator), False))
        if add_generation_prompt:
            parts.append((self.generation_prompt, False))
        return parts
