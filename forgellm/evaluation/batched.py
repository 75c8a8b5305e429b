"""Greedy answers to several conversations at once, for a TransformersEngine.

Decoding one token reads every weight of the model; on a CPU that memory traffic, not the arithmetic,
sets the pace. Answering a batch of prompts per forward pass reads the weights once for all of them,
which makes the side-by-side answers of `forge eval` several times faster than one prompt at a time.

Each answer ends exactly as `TransformersEngine.stream` ends one (the engine's end-of-turn ids and its
StopScanner over the stop strings), so the Generation records mean the same: text, tokens generated,
whether the model ended its turn, seconds until it did.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from forgellm.errors import ForgeError

BATCH_SIZE = 8  # conversations per forward pass: the weights are read once for all of them


@dataclass
class _Row:
    """One answer being written."""

    budget: int
    scanner: Any  # forgellm.serve.engines.StopScanner
    generated: list[int] = field(default_factory=list)
    text: str = ""
    ended: bool = False  # the model ended its turn (end-of-turn token or stop string)
    seconds: float | None = None  # set when the row is finished

    @property
    def finished(self) -> bool:
        return self.seconds is not None


def generate_batch(
    engine: Any,
    conversations: Sequence[Sequence[dict[str, str]]],
    max_new_tokens: int,
    *,
    batch_size: int = BATCH_SIZE,
    on_done: Callable[[int], None] = lambda _count: None,
) -> list[Any]:
    """Greedy Generation records, one per conversation, in order; ``on_done(n)`` as answers finish."""
    results: list[Any] = []
    for start in range(0, len(conversations), batch_size):
        chunk = conversations[start : start + batch_size]
        results.extend(_generate_chunk(engine, chunk, max_new_tokens, lambda n: on_done(len(results) + n)))
    return results


def _encode(engine: Any, conversations: Sequence[Sequence[dict[str, str]]]) -> list[list[int]]:
    encoded = []
    for messages in conversations:
        prompt = engine.chat_format.render_text(messages, add_generation_prompt=True)
        # The rendered text already holds BOS where the format wants one (as in the engine).
        encoded.append(list(engine.tokenizer(prompt, add_special_tokens=False)["input_ids"]))
    return encoded


def _budget(engine: Any, prompt_tokens: int, max_new_tokens: int) -> int:
    context = engine.context
    if context and prompt_tokens >= context:
        raise ForgeError(
            f"A test conversation ({prompt_tokens} tokens) is longer than the model's context ({context}).",
            fix="Prepare the data with a model.max_length below the model's context, then train again.",
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


def _generate_chunk(
    engine: Any, conversations: Sequence[Sequence[dict[str, str]]], max_new_tokens: int, on_done: Callable[[int], None]
) -> list[Any]:
    import torch

    from forgellm.serve.engines import Generation, StopScanner

    model, tokenizer = engine.model, engine.tokenizer
    stops = (*engine.chat_format.stop_strings, *engine.chat_format.stop_markers)
    encoded = _encode(engine, conversations)
    rows = [_Row(_budget(engine, len(ids), max_new_tokens), StopScanner(stops)) for ids in encoded]
    device = next(model.parameters()).device
    inputs, mask = _left_padded(encoded, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    toggle = contextlib.nullcontext() if engine.adapter_enabled else model.disable_adapter()
    past, start, done = None, time.perf_counter(), 0
    with torch.inference_mode(), toggle:
        for _ in range(max(row.budget for row in rows)):
            out = model(
                input_ids=inputs, attention_mask=mask, position_ids=positions, past_key_values=past, use_cache=True
            )
            past = out.past_key_values
            tokens = torch.argmax(out.logits[:, -1], dim=-1).tolist()
            for row, token in zip(rows, tokens, strict=True):
                if not row.finished and _step(row, token, engine.stop_ids, tokenizer):
                    row.seconds, done = time.perf_counter() - start, done + 1
                    on_done(done)
            if all(row.finished for row in rows):
                break
            # Finished rows go on decoding into the void: the batch keeps its shape, their answers are kept.
            inputs = torch.tensor(tokens, device=device)[:, None]
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            positions = positions[:, -1:] + 1
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
