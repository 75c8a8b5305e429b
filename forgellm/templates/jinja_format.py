"""Chat formats backed by a Jinja template: the tokenizer's own, or a custom one from the user.

Text comes from ``tokenizer.apply_chat_template``. Trained spans come from prefix diffing: the
conversation up to an assistant turn, rendered with the generation prompt, must be a prefix of the
conversation including that turn; the difference is the assistant's answer, cut right after its last
end-of-turn marker (a trailing newline separator is not trained).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from forgellm.errors import ErrorCode, ForgeError, cause

from .families import BUILTIN_NAMES
from .messages import Message, RenderedConversation, merge_spans, validate_messages

# End-of-turn markers of common families; whichever occurs last in an answer ends the trained span.
KNOWN_END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|eom_id|>", "</s>")


@dataclass(frozen=True)
class JinjaChatFormat:
    """A Jinja chat template rendered through a (fast) Hugging Face tokenizer."""

    name: str  # "tokenizer" or "custom"
    template: str
    tokenizer: Any
    system_prompt: str | None = None  # injected when the conversation has none; None = template decides
    forbidden: tuple[str, ...] = ()

    @property
    def add_bos(self) -> None:
        return None  # the template text may or may not hold a BOS: the tokenizer's own setting decides

    @property
    def stop_markers(self) -> tuple[str, ...]:
        eos = getattr(self.tokenizer, "eos_token", None)
        used = [m for m in KNOWN_END_MARKERS if m in self.template]
        return tuple(dict.fromkeys([*used, *([eos] if eos else [])]))

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return self.stop_markers

    def _messages(self, messages: Sequence[Message]) -> list[dict[str, str]]:
        msgs = validate_messages(messages, forbidden=self.forbidden)
        if self.system_prompt and msgs[0]["role"] != "system":
            msgs = [{"role": "system", "content": self.system_prompt}, *msgs]
        return msgs

    def _apply(self, msgs: list[dict[str, str]], add_generation_prompt: bool) -> str:
        try:
            text = self.tokenizer.apply_chat_template(
                msgs, chat_template=self.template, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        except Exception as exc:  # jinja2 errors and the template's own raise_exception()
            raise ForgeError(
                f"The {self.name} chat template failed to render this conversation: {exc}",
                fix=f"Fix the template, or use a builtin one ({', '.join(BUILTIN_NAMES)}).",
                code=ErrorCode.TEMPLATE_INVALID, data={"template": self.name, "cause": cause(exc)},
            ) from exc
        if not isinstance(text, str):  # a list when transformers thinks it got a batch
            raise ForgeError(
                f"The {self.name} chat template did not render to text.",
                fix="Check the template.",
                code=ErrorCode.TEMPLATE_INVALID,
                data={"template": self.name},
            )
        return text

    def render_text(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        return self._apply(self._messages(messages), add_generation_prompt)

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> RenderedConversation:
        msgs = self._messages(messages)
        full = self._apply(msgs, add_generation_prompt)
        spans: list[tuple[int, int]] = []
        for i, msg in enumerate(msgs):
            if msg["role"] != "assistant":
                continue
            before = self._apply(msgs[:i], True) if i else self._apply_empty()
            upto = self._apply(msgs[: i + 1], False)
            if not (upto.startswith(before) and full.startswith(upto)):
                raise ForgeError(
                    f"The {self.name} chat template is not prefix-consistent: rendering a conversation "
                    "up to an assistant turn does not give the start of the full rendering, so Forge "
                    "cannot tell which characters are the assistant's answer.",
                    fix=f"Use a builtin template instead (templates.name in forge.yaml: {', '.join(BUILTIN_NAMES)}).",
                    code=ErrorCode.TEMPLATE_NOT_PREFIX_CONSISTENT,
                    data={"template": self.name},
                )
            spans.append((len(before), self._answer_end(upto, len(before))))
        return RenderedConversation(full, merge_spans(spans))

    def _apply_empty(self) -> str:
        # Templates may refuse an empty history; then the answer starts at offset 0.
        try:
            return self._apply([], True)
        except ForgeError:
            return ""

    def _answer_end(self, upto: str, start: int) -> int:
        """End of the trained span: right after the last end marker, else before trailing whitespace."""
        answer = upto[start:]
        best = -1
        for marker in self.stop_markers:
            at = answer.rfind(marker)
            if at >= 0:
                best = max(best, at + len(marker))
        if best >= 0:
            return start + best
        return start + len(answer.rstrip())
