"""Inference engines: a chat (list of messages) -> streamed answer text, rendered with OUR chat format.

Both engines render the prompt with the project's chat format (never a library's own chat handler), so
what the model sees at inference is what it saw in training. Each generation leaves a `Generation`
record in ``engine.last``: the text, how many tokens were generated, whether the model ended its turn by
itself (end-of-turn token, EOS or a stop string) or ran into the token limit, and how long it took.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from forgellm.errors import ErrorCode, ForgeError, cause
from forgellm.models.dims import context_length_of

if TYPE_CHECKING:
    from forgellm.templates.messages import ChatFormat

Message = dict[str, str]
LLAMA_INSTALL = 'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF" pip install llama-cpp-python'


@dataclass(frozen=True)
class Generation:
    """What one answer cost and how it ended."""

    text: str
    tokens: int  # generated tokens, the end-of-turn token included
    stopped_at_end_of_turn: bool  # False: the answer was cut at max_new_tokens
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@runtime_checkable
class InferenceEngine(Protocol):
    """What the chat and --compare ask of any engine (transformers or llama.cpp)."""

    @property
    def label(self) -> str:
        """What the user is talking to, e.g. "run 2026... (transformers, cpu fp32)"."""
        ...

    @property
    def chat_format(self) -> ChatFormat: ...

    @property
    def last(self) -> Generation | None:
        """The record of the newest finished (or interrupted) generation."""
        ...

    @property
    def has_adapter(self) -> bool:
        """True when a LoRA adapter sits on top of base weights that can be shown without it."""
        ...

    def without_adapter(self, label: str) -> InferenceEngine:
        """The base model under the adapter (only when ``has_adapter``)."""
        ...

    def stream(self, messages: Sequence[Message], max_new_tokens: int = 256, temperature: float = 0.0) -> Iterator[str]:
        """Yield the answer's text as it is generated; ``last`` is set when the iterator ends."""
        ...


def generate(
    engine: InferenceEngine, messages: Sequence[Message], max_new_tokens: int = 256, temperature: float = 0.0
) -> Generation:
    """The whole answer at once (the stream, drained)."""
    for _ in engine.stream(messages, max_new_tokens, temperature):
        pass
    assert engine.last is not None, "a finished stream leaves its record"
    return engine.last


class StopScanner:
    """Cuts generated text at the first stop string and holds back a tail that may still become one,
    so a half-printed ``<|im_`` never reaches the screen."""

    def __init__(self, stop_strings: Sequence[str]) -> None:
        self.stops = tuple(s for s in stop_strings if s)
        self.emitted = 0  # characters of the text already handed out
        self.stopped = False

    def feed(self, text: str, *, final: bool = False) -> str:
        """`text` is the whole answer decoded so far; returns the new part that is safe to show."""
        found = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if found:
            self.stopped = True
            end = min(found)
        elif final:
            end = len(text)
        else:
            end = len(text) - self._open_tail(text)
            if text[:end].endswith("\ufffd"):  # an incomplete UTF-8 character: wait for its next byte
                end -= 1
        piece = text[self.emitted : end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return piece

    def _open_tail(self, text: str) -> int:
        """Length of the longest suffix of `text` that begins some stop string."""
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest


# ------------------------------------------------------------------------------------------------ transformers


def forward_parameters(model: Any) -> Any:
    """The keyword parameters of the model's forward (peft passes keywords through to its base model)."""
    import inspect

    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inspect.signature(core.forward).parameters


def cache_keyword(model: Any) -> str:
    """The name the model's forward takes its KV cache by: transformers 5 renamed `past_key_values` to
    `cache` (the old name warns, and goes in 5.40); older versions know only the old one."""
    return "cache" if "cache" in forward_parameters(model) else "past_key_values"


def _device_and_dtype() -> tuple[Any, str]:
    """CUDA when present, in its training precision; else CPU in fp32 (hardware.precision decides)."""
    import dataclasses

    from forgellm.hardware.precision import inference_precision
    from forgellm.hardware.probe import probe_hardware
    from forgellm.training.model import pick_device

    device = pick_device()
    hardware = probe_hardware()
    if device.type != "cuda" and hardware.gpus:  # a CPU build of torch on a GPU machine
        hardware = dataclasses.replace(hardware, gpus=())
    return device, inference_precision(hardware)


def _load_causal_lm(model_dir: Path, precision: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    try:
        return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    except Exception as exc:  # missing weights, damaged safetensors, unknown architecture
        raise ForgeError(
            f"Cannot load the model in {model_dir} ({type(exc).__name__}: {str(exc)[:300]}).",
            fix="The folder needs config.json and its weights (*.safetensors); a damaged file needs a fresh copy.",
            code=ErrorCode.MODEL_LOAD_FAILED, data={"cause": cause(exc)},
        ) from None


def _attach_adapter(model: Any, adapter_dir: Path, base_dir: Path) -> Any:
    import warnings

    from peft import PeftModel

    fix = (
        "Use the base model the adapter was trained on (adapter_config.json names it), "
        "or train again with `forge train`."
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # peft's missing-keys note: checked below, with a clear message
            model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except Exception as exc:  # size mismatch (RuntimeError), missing target modules (ValueError), bad file
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ForgeError(
            f"The LoRA adapter in {adapter_dir} does not fit the base model {base_dir} "
            f"({type(exc).__name__}: {first_line}).",
            fix=fix,
            code=ErrorCode.ADAPTER_MISMATCH, data={"cause": cause(exc)},
        ) from None
    missing, unexpected = _adapter_key_mismatch(model, adapter_dir / "adapter_model.safetensors")
    if missing or unexpected:  # same shapes, other layout (e.g. another layer count): peft loads it silently
        raise ForgeError(
            f"The LoRA adapter in {adapter_dir} does not fit the base model {base_dir}: "
            f"{len(missing)} adapter weights the model needs are missing from it and {len(unexpected)} of its "
            f"weights have no place in the model (e.g. {next(iter(sorted(missing or unexpected)))}).",
            fix=fix,
            code=ErrorCode.ADAPTER_MISMATCH,
        )
    return model


def _adapter_key_mismatch(model: Any, weights: Path) -> tuple[set[str], set[str]]:
    """(needed but absent, present but unused) adapter tensor names, as the adapter file spells them."""
    if not weights.is_file():
        return set(), set()
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open

    # Only the LoRA matrices: embedding copies and modules_to_save may or may not be saved, by settings.
    expected = {k for k in get_peft_model_state_dict(model, save_embedding_layers=False) if ".lora_" in k}
    with safe_open(str(weights), framework="pt") as handle:
        found = {k for k in handle.keys() if ".lora_" in k}
    return expected - found, found - expected


def end_of_turn_ids(tokenizer: Any, chat_format: ChatFormat, generation_eos: Any = None) -> set[int]:
    """Token ids that end an answer: the format's stop and end-of-turn strings that are single tokens,
    the tokenizer's EOS and the model's generation_config EOS ids."""
    ids: set[int] = set()
    for text in (*chat_format.stop_strings, *chat_format.stop_markers):
        encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1:
            ids.add(int(encoded[0]))
    extra = generation_eos if isinstance(generation_eos, (list, tuple)) else [generation_eos]
    for token_id in (getattr(tokenizer, "eos_token_id", None), *extra):
        if isinstance(token_id, int):
            ids.add(token_id)
    return ids


class TransformersEngine:
    """A Hugging Face model (full or merged folder, or a base with a peft adapter), one token at a time
    with the KV cache, so each token is shown as soon as it exists and Ctrl-C stops at once."""

    def __init__(
        self, model: Any, tokenizer: Any, chat_format: ChatFormat, label: str, *, adapter_enabled: bool = True
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.chat_format = chat_format
        self.label = label
        self.adapter_enabled = adapter_enabled
        self.last: Generation | None = None
        generation_config = getattr(model, "generation_config", None)
        self.stop_ids = end_of_turn_ids(tokenizer, chat_format, getattr(generation_config, "eos_token_id", None))
        self.context = context_length_of(model.config) or 0  # 0: unknown, so answers are not capped by it

    @classmethod
    def load(
        cls, model_dir: Path, tokenizer: Any, chat_format: ChatFormat, label: str, *, adapter_dir: Path | None = None
    ) -> TransformersEngine:
        device, precision = _device_and_dtype()
        model = _load_causal_lm(model_dir, precision)
        if adapter_dir is not None:
            model = _attach_adapter(model, adapter_dir, model_dir)
        model.to(device).eval()
        return cls(model, tokenizer, chat_format, f"{label} (transformers, {device.type} {precision})")

    @property
    def has_adapter(self) -> bool:
        return hasattr(self.model, "disable_adapter")

    def without_adapter(self, label: str) -> TransformersEngine:
        """The base model under the adapter, sharing its weights (no second copy in memory)."""
        assert self.has_adapter, "only a model with a peft adapter has a base to show"
        suffix = self.label[self.label.rfind(" (") :] if " (" in self.label else ""
        return TransformersEngine(self.model, self.tokenizer, self.chat_format, label + suffix, adapter_enabled=False)

    def stream(self, messages: Sequence[Message], max_new_tokens: int = 256, temperature: float = 0.0) -> Iterator[str]:
        import torch

        prompt = self.chat_format.render_text(messages, add_generation_prompt=True)
        # The rendered text already holds BOS where the format wants one.
        ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        budget = self._budget(ids.shape[1], max_new_tokens)
        device = next(self.model.parameters()).device
        scanner = StopScanner((*self.chat_format.stop_strings, *self.chat_format.stop_markers))
        generated: list[int] = []
        ended, text, start = False, "", time.perf_counter()
        toggle = contextlib.nullcontext() if self.adapter_enabled else self.model.disable_adapter()
        try:
            with torch.inference_mode(), toggle:
                inputs, past, keyword = ids.to(device), None, cache_keyword(self.model)
                for _ in range(budget):
                    out = self.model(input_ids=inputs, use_cache=True, **{keyword: past})
                    past = getattr(out, keyword)
                    token = _pick(out.logits[0, -1], temperature)
                    generated.append(token)
                    if token in self.stop_ids:
                        ended = True
                        break
                    text = self._decode(generated)
                    piece = scanner.feed(text)
                    if piece:
                        yield piece
                    if scanner.stopped:
                        ended = True
                        break
                    inputs = torch.tensor([[token]], device=device)
            piece = scanner.feed(text, final=True)
            if piece:
                yield piece
        finally:
            answer = text[: scanner.emitted]
            self.last = Generation(answer, len(generated), ended, time.perf_counter() - start)

    def _decode(self, ids: list[int]) -> str:
        # Special tokens stay visible (a model that emits <|im_start|> mid-answer should be seen doing so).
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _budget(self, prompt_tokens: int, max_new_tokens: int) -> int:
        if self.context and prompt_tokens >= self.context:
            raise ForgeError(
                f"The conversation ({prompt_tokens} tokens) is longer than the model's context ({self.context}).",
                fix="Start over with /reset, or send a shorter message.",
                code=ErrorCode.CONTEXT_EXCEEDED,
            )
        return min(max_new_tokens, self.context - prompt_tokens) if self.context else max_new_tokens


def _pick(logits: Any, temperature: float) -> int:
    """Greedy at temperature 0, else a sample from the softened distribution."""
    import torch

    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return int(torch.multinomial(probs, 1))


# ------------------------------------------------------------------------------------------------ llama.cpp


def import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise ForgeError(
            "The llama.cpp engine needs the llama-cpp-python package, which is not installed.",
            fix=f"Install it with: {LLAMA_INSTALL}  (or use --engine transformers).",
            code=ErrorCode.DEPENDENCY_MISSING, data={"package": "llama-cpp-python"},
        ) from None
    return llama_cpp


class LlamaCppEngine:
    """A .gguf file through llama.cpp. The prompt is rendered by our chat format and passed as token ids
    (so a BOS in the text is not doubled); stop strings come from the same format."""

    def __init__(self, llm: Any, chat_format: ChatFormat, label: str) -> None:
        self.llm = llm
        self.chat_format = chat_format
        self.label = label
        self.last: Generation | None = None

    @classmethod
    def load(cls, gguf_path: Path, chat_format: ChatFormat, label: str, *, n_ctx: int = 4096) -> LlamaCppEngine:
        llama_cpp = import_llama_cpp()
        try:
            llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=n_ctx, verbose=False)
        except Exception as exc:  # llama.cpp reports a bad file as ValueError("Failed to load model ...")
            raise ForgeError(
                f"llama.cpp cannot load {gguf_path} ({type(exc).__name__}: {exc}).",
                fix="The file may be damaged or of an architecture this llama.cpp build does not know; "
                "try --engine transformers, or export it again with `forge export`.",
                code=ErrorCode.MODEL_LOAD_FAILED, data={"cause": cause(exc)},
            ) from None
        return cls(llm, chat_format, f"{label} (llama.cpp, n_ctx {n_ctx})")

    @property
    def has_adapter(self) -> bool:
        return False  # a GGUF holds merged weights: there is no base under them to switch to

    def without_adapter(self, label: str) -> LlamaCppEngine:
        raise AssertionError("a GGUF has no adapter to switch off; check has_adapter first")

    def stream(self, messages: Sequence[Message], max_new_tokens: int = 256, temperature: float = 0.0) -> Iterator[str]:
        prompt = self.chat_format.render_text(messages, add_generation_prompt=True)
        tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        n_ctx = self.llm.n_ctx()
        if len(tokens) >= n_ctx:
            raise ForgeError(
                f"The conversation ({len(tokens)} tokens) is longer than the context ({n_ctx}).",
                fix="Start over with /reset, or send a shorter message.",
                code=ErrorCode.CONTEXT_EXCEEDED,
            )
        sampled = [0]

        def count(_ids: Any, scores: Any) -> Any:  # called once per sampled token, the end-of-turn one too
            sampled[0] += 1
            return scores

        stops = list(dict.fromkeys((*self.chat_format.stop_strings, *self.chat_format.stop_markers)))
        chunks = self.llm.create_completion(
            tokens, max_tokens=min(max_new_tokens, n_ctx - len(tokens)), temperature=temperature,
            top_p=1.0, top_k=0, min_p=0.0, repeat_penalty=1.0, stop=stops, stream=True, logits_processor=[count],
        )  # fmt: skip
        parts: list[str] = []
        reason, start = None, time.perf_counter()
        try:
            for chunk in chunks:
                choice = chunk["choices"][0]
                if choice.get("text"):
                    parts.append(choice["text"])
                    yield choice["text"]
                reason = choice.get("finish_reason") or reason
        finally:
            self.last = Generation("".join(parts), sampled[0], reason == "stop", time.perf_counter() - start)
