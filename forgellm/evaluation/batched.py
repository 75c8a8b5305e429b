"""Greedy answers to several conversations at once, for a TransformersEngine.

Decoding one token reads every weight of the model; on a CPU that memory traffic, not the arithmetic,
sets the pace. Answering a batch of prompts per forward pass reads the weights once for all of them,
which makes the side-by-side answers of `forge eval` several times faster than one prompt at a time.
An answer that has ended leaves the batch, so the rest go on at the cost of the rows still writing.

Each answer ends exactly as `TransformersEngine.stream` ends one (the engine's end-of-turn ids and its
StopScanner over the stop strings), so the Generation records mean the same: text, tokens generated,
whether the model ended its turn, seconds until it did.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from forgellm.errors import ErrorCode, ForgeError
from forgellm.inference.engines import cache_keyword

if TYPE_CHECKING:
    from forgellm.inference.engines import TransformersEngine

# Conversations per forward pass: the weights are read once for all of them. Measured on 2 CPU cores with
# SmolLM2-135M (32 support questions, <=128 tokens, 1 thread): 8 -> 61 s, 16 -> 38 s, 32 -> 31 s; 64 answers:
# 32 -> 57 s, 64 -> 48 s. 32 takes most of the gain while its KV cache stays bounded (BATCH_TOKENS).
BATCH_SIZE = 32
BATCH_TOKENS = 32 * 1024  # rows x (longest prompt + answer limit): the KV cache of one batch (1.5 GB at 135M fp32)


@dataclass
class _Row:
    """One answer being written."""

    budget: int
    scanner: Any  # forgellm.inference.engines.StopScanner
    generated: list[int] = field(default_factory=list)
    text: str = ""
    ended: bool = False  # the model ended its turn (end-of-turn token or stop string)
    seconds: float | None = None  # set when the row is finished

    @property
    def finished(self) -> bool:
        return self.seconds is not None


def generate_batch(
    engine: TransformersEngine,
    conversations: Sequence[Sequence[dict[str, str]]],
    max_new_tokens: int,
    *,
    batch_size: int = BATCH_SIZE,
    on_done: Callable[[int], None] = lambda _count: None,
) -> list[Any]:
    """Greedy Generation records, one per conversation, in order; ``on_done(n)`` as answers finish."""
    from forgellm.quiet import quiet_libraries

    encoded = _encode(engine, conversations)
    results: list[Any] = []
    with quiet_libraries():
        for chunk in _chunks([len(ids) for ids in encoded], max_new_tokens, batch_size):
            prompts = [encoded[i] for i in chunk]
            results.extend(_generate_chunk(engine, prompts, max_new_tokens, lambda n: on_done(len(results) + n)))
    return results


def _chunks(lengths: list[int], max_new_tokens: int, batch_size: int, budget: int = BATCH_TOKENS) -> list[range]:
    """Consecutive runs of at most ``batch_size`` prompts whose rows x (longest prompt + answer limit) stays
    within ``budget`` (one prompt alone may pass it: it has to be answered)."""
    chunks: list[range] = []
    start, longest = 0, 0
    for index, length in enumerate(lengths):
        longest = max(longest, length)
        rows = index - start + 1
        if index > start and (rows > batch_size or rows * (longest + max_new_tokens) > budget):
            chunks.append(range(start, index))
            start, longest = index, length
    if lengths:
        chunks.append(range(start, len(lengths)))
    return chunks


def _encode(engine: TransformersEngine, conversations: Sequence[Sequence[dict[str, str]]]) -> list[list[int]]:
    encoded = []
    for messages in conversations:
        prompt = engine.chat_format.render_text(messages, add_generation_prompt=True)
        # The rendered text already holds BOS where the format wants one (as in the engine).
        encoded.append(list(engine.tokenizer(prompt, add_special_tokens=False)["input_ids"]))
    return encoded


def _budget(engine: TransformersEngine, prompt_tokens: int, max_new_tokens: int) -> int:
    context = engine.context
    if context and prompt_tokens >= context:
        raise ForgeError(
            f"A test conversation ({prompt_tokens} tokens) is longer than the model's context ({context}).",
            fix="Prepare the data with a model.max_length below the model's context, then train again.",
            code=ErrorCode.CONTEXT_EXCEEDED,
        )
    return min(max_new_tokens, context - prompt_tokens) if context else max_new_tokens


def _left_padded(encoded: list[list[int]], device: Any) -> tuple[Any, Any]:
    """(input_ids, attention_mask) with the padding on the left, so every row's next token is the last column."""
    import torch

    width = max(len(ids) for ids in encoded)
    ids = torch.zeros((len(encoded), width), dtype=torch.long)  # the pad id is never attended to
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, tokens in enumerate(encoded):
        ids[row, width - len(tokens) :] = torch.tensor(tokens, dtype=torch.long)
        mask[row, width - len(tokens) :] = 1
    return ids.to(device), mask.to(device)


def _last_logits_only(model: Any) -> dict[str, int]:
    """Ask for the last position's logits only: on the prompt pass the others would cost rows x prompt
    length x vocabulary floats (gigabytes for a 150k vocabulary) and are thrown away."""
    parameters = _forward_parameters(model)
    for name in ("logits_to_keep", "num_logits_to_keep"):  # the name since transformers 4.50, and before
        if name in parameters:
            return {name: 1}
    return {}


def _forward_parameters(model: Any) -> Any:
    from forgellm.inference.engines import forward_parameters

    return forward_parameters(model)


@dataclass
class _Batch:
    """The model's inputs for the next token of the rows still being written."""

    active: list[int]  # indices of those rows, in the batch's order
    inputs: Any
    mask: Any
    positions: Any
    past: Any = None  # the KV cache

    def keep(self, keep: list[int], tokens: Any) -> None:
        """Go on with the rows at positions ``keep`` only, whose last tokens are ``tokens``: an answer that
        ended leaves the batch, so no compute goes on after its end."""
        import torch

        if len(keep) < len(self.active):
            chosen = torch.tensor(keep, device=tokens.device)
            self.active, tokens = [self.active[k] for k in keep], tokens[chosen]
            self.mask, self.positions = self.mask[chosen], self.positions[chosen]
            if hasattr(self.past, "batch_select_indices"):  # a transformers Cache, changed in place
                self.past.batch_select_indices(chosen)
            else:  # legacy tuples of (keys, values) per layer
                self.past = tuple(tuple(tensor[chosen] for tensor in layer) for layer in self.past)
        self.inputs = tokens[:, None]
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(keep), 1))], dim=1)
        self.positions = self.positions[:, -1:] + 1


def _generate_chunk(
    engine: TransformersEngine, encoded: list[list[int]], max_new_tokens: int, on_done: Callable[[int], None]
) -> list[Any]:
    import torch

    from forgellm.inference.engines import Generation, StopScanner

    model, tokenizer = engine.model, engine.tokenizer
    stops = (*engine.chat_format.stop_strings, *engine.chat_format.stop_markers)
    rows = [_Row(_budget(engine, len(ids), max_new_tokens), StopScanner(stops)) for ids in encoded]
    inputs, mask = _left_padded(encoded, next(model.parameters()).device)
    batch = _Batch(list(range(len(rows))), inputs, mask, (mask.cumsum(-1) - 1).clamp(min=0))
    toggle = contextlib.nullcontext() if engine.adapter_enabled else model.disable_adapter()
    keyword, extra, start, done = cache_keyword(model), _last_logits_only(model), time.perf_counter(), 0
    with torch.inference_mode(), toggle:
        for _ in range(max(row.budget for row in rows)):
            out = model(
                input_ids=batch.inputs, attention_mask=batch.mask, position_ids=batch.positions, use_cache=True,
                **{keyword: batch.past}, **extra,
            )  # fmt: skip
            batch.past = getattr(out, keyword)
            tokens = torch.argmax(out.logits[:, -1], dim=-1)
            for index, token in zip(batch.active, tokens.tolist(), strict=True):
                if _step(rows[index], token, engine.stop_ids, tokenizer):
                    rows[index].seconds, done = time.perf_counter() - start, done + 1
                    on_done(done)
            keep = [k for k, index in enumerate(batch.active) if not rows[index].finished]
            if not keep:
                break
            batch.keep(keep, tokens)
    results = []
    for row in rows:
        row.scanner.feed(row.text, final=True)
        results.append(Generation(row.text[: row.scanner.emitted], len(row.generated), row.ended, row.seconds or 0.0))
    return results


def _step(row: _Row, token: int, stop_ids: set[int], tokenizer: Any) -> bool:
    """Add one token to a row as the engine's stream does; True when the row is finished."""
    row.generated.append(token)
    if token in stop_ids:
        row.ended = True
        return True
    # Special tokens stay visible, as in the engine (a model that writes <|im_start|> mid-answer shows it).
    row.text = tokenizer.decode(row.generated, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    row.scanner.feed(row.text)
    if row.scanner.stopped:
        row.ended = True
        return True
    return len(row.generated) >= row.budget
