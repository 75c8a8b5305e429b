"""One answer of a served model, in the host's worker thread: the chat template (chat) or the plain text
(completion) through the engine, the client's own stop strings on top of the model's end of turn, and
how it ended (`Finished`: OpenAI's finish_reason and token counts)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from forgellm.templates.messages import Message, RenderedConversation

if TYPE_CHECKING:
    from forgellm.inference.engines import InferenceEngine
    from forgellm.inference.model_choice import ModelChoice


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate: `messages` (chat, through the model's chat template) or `prompt` (plain text)."""

    model: str
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    max_tokens: int = 512
    temperature: float = 0.0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finished:
    """How an answer ended: "stop" (end of turn, EOS or a stop string) or "length" (max_tokens reached)."""

    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class PlainText:
    """A ChatFormat that renders a prompt as it is: completion mode. The BOS text leads it when the
    tokenizer would add one (the engines tokenize rendered text without adding special tokens)."""

    bos: str = ""
    name: str = "plain text"
    system_prompt: str | None = None
    forbidden: tuple[str, ...] = ()
    add_bos: bool | None = None
    stop_strings: tuple[str, ...] = ()
    stop_markers: tuple[str, ...] = ()

    def render_text(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        return self.bos + "".join(str(m["content"]) for m in messages)

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> RenderedConversation:
        return RenderedConversation(self.render_text(messages, add_generation_prompt), ())


def bos_text(tokenizer: Any) -> str:
    """The BOS token's text when the tokenizer puts it before a text by itself, else ''."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos_id is None:
        return ""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return str(tokenizer.bos_token) if ids and ids[0] == bos_id else ""


def plain_engine(engine: InferenceEngine, tokenizer: Any) -> InferenceEngine:
    """The same loaded weights, prompted with plain text instead of the chat template."""
    from forgellm.inference.engines import LlamaCppEngine, TransformersEngine

    plain = PlainText(bos_text(tokenizer))
    if isinstance(engine, TransformersEngine):
        return TransformersEngine(
            engine.model, engine.tokenizer, plain, engine.label, adapter_enabled=engine.adapter_enabled
        )
    if isinstance(engine, LlamaCppEngine):
        return LlamaCppEngine(engine.llm, plain, engine.label)
    raise AssertionError(f"no plain-text form of {type(engine).__name__}")


@dataclass
class LoadedModel:
    """A model in memory: its choice (tokenizer, chat format) and engine, and the plain-text engine made
    from the same weights on first use."""

    choice: ModelChoice
    engine: InferenceEngine
    _plain: InferenceEngine | None = field(default=None, repr=False)

    def engine_for(self, chat: bool) -> InferenceEngine:
        if chat:
            return self.engine
        if self._plain is None:
            self._plain = plain_engine(self.engine, self.choice.tokenizer)
        return self._plain

    def count_prompt(self, engine: InferenceEngine, messages: Sequence[Message]) -> int:
        """Tokens of the rendered prompt (rendering also checks the conversation: roles, control tokens)."""
        text = engine.chat_format.render_text(messages, add_generation_prompt=True)
        return len(self.choice.tokenizer(text, add_special_tokens=False)["input_ids"])


def run_generation(loaded: LoadedModel, request: GenerationRequest, put: Callable[[Any], None], cancel: Any) -> None:
    """Generate `request`, handing each new piece of text to `put`, then a `Finished`. Stops early when
    `cancel` (a threading.Event) is set. Raises ForgeError for a prompt the model cannot take."""
    from forgellm.inference.engines import StopScanner
    from forgellm.templates.messages import validate_messages

    chat = request.messages is not None
    engine = loaded.engine_for(chat)
    if chat:
        messages = validate_messages(request.messages or [], forbidden=engine.chat_format.forbidden)
    else:
        messages = [{"role": "user", "content": request.prompt or ""}]
    prompt_tokens = loaded.count_prompt(engine, messages)
    scanner = StopScanner(request.stop)  # the client's stop strings; the engine stops at the end of turn
    stream = engine.stream(messages, request.max_tokens, request.temperature)
    text = ""
    try:
        for piece in stream:
            if cancel.is_set():
                return
            text += piece
            shown = scanner.feed(text)
            if shown:
                put(shown)
            if scanner.stopped:
                break
    finally:
        stream.close()  # ends the engine's loop (a stop string or a client that left) and records `last`
    if not scanner.stopped:
        rest = scanner.feed(text, final=True)
        if rest:
            put(rest)
    last = engine.last
    ended = scanner.stopped or (last is not None and last.stopped_at_end_of_turn)
    put(Finished("stop" if ended else "length", prompt_tokens, last.tokens if last is not None else 0))
