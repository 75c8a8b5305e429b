"""Batched rendering and tokenization for `prepare`: many conversations per tokenizer call.

The fast tokenizer encodes a whole batch in Rust on all cores; labels come from its offset mapping
with the same boundary rule as `forgellm.templates.tokens.label_tokens`, by bisection per span.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from forgellm.errors import ForgeError
from forgellm.templates import IGNORE_INDEX
from forgellm.templates.messages import ChatFormat, Message


@dataclass(frozen=True, slots=True)
class Encoded:
    text: str
    input_ids: list[int]
    labels: list[int]
    trained_tokens: int


def render_batch(chat_format: ChatFormat, conversations: Sequence[Sequence[Message]]) -> list[Any]:
    """RenderedConversation per conversation, or the ForgeError where it can't be rendered (its message
    is the reject reason; its code is what diagnosis reads when every row fails the same way)."""
    rendered: list[Any] = []
    for messages in conversations:
        try:
            rendered.append(chat_format.render(messages))
        except ForgeError as exc:
            rendered.append(exc)
    return rendered


def spans_to_labels(
    ids: list[int], offsets: list[tuple[int, int]], spans: Sequence[tuple[int, int]]
) -> tuple[list[int], int]:
    """(labels, trained count) by bisection per span (few spans, many tokens): same rule as label_mask."""
    labels = [IGNORE_INDEX] * len(ids)
    points = [end if end > start else start + 1 for start, end in offsets]
    trained = 0
    for start, end in spans:
        first = bisect_right(points, start)  # first token whose point lies after the span start
        last = bisect_right(points, end)  # tokens before this one have point <= span end
        labels[first:last] = ids[first:last]
        trained += max(0, last - first)
    return labels, trained


def _labels_from_encoding(encoding: Any, spans: Sequence[tuple[int, int]]) -> tuple[list[int], int] | None:
    """Labels by asking the Rust encoding which tokens hold each span's first and last character —
    no per-token offsets are converted to Python. None when a span edge maps to no token (then the
    caller falls back to the offsets)."""
    ids = encoding.ids
    labels = [IGNORE_INDEX] * len(ids)
    trained = 0
    for start, end in spans:
        first, last = encoding.char_to_token(start), encoding.char_to_token(end - 1)
        if first is None or last is None:
            return None
        if encoding.token_to_chars(last)[1] > end:  # straddles past the span's end: not trained
            last -= 1
        if last >= first:
            labels[first : last + 1] = ids[first : last + 1]
            trained += last + 1 - first
    return labels, trained


def encode_rendered(tokenizer: Any, rendered: Sequence[Any]) -> Any:
    """The Rust half of tokenization: one batched call, all cores, the GIL released (so it can run in a
    worker thread while the main thread does Python work). Pass the result to `label_encoded`."""
    if not rendered:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow tokenizer: no Rust encodings to hand over, so finish the job here
        return tokenize_rendered(tokenizer, rendered)
    return backend.encode_batch([r.text for r in rendered], add_special_tokens=False)


def label_encoded(rendered: Sequence[Any], encoded: Any) -> list[Encoded]:
    """The Python half: token ids and labels from `encode_rendered`'s Rust encodings."""
    results = []
    for item, encoding in zip(rendered, encoded, strict=True):
        if isinstance(encoding, Encoded):  # already finished by the slow-tokenizer path
            results.append(encoding)
            continue
        labelled = _labels_from_encoding(encoding, item.trained_spans)
        if labelled is None:
            labelled = spans_to_labels(encoding.ids, encoding.offsets, item.trained_spans)
        results.append(Encoded(item.text, encoding.ids, *labelled))
    return results


def tokenize_rendered(tokenizer: Any, rendered: Sequence[Any]) -> list[Encoded]:
    """One batched call of the Rust tokenizer for all rendered conversations (no error entries here)."""
    if not rendered:
        return []
    if getattr(tokenizer, "backend_tokenizer", None) is not None:
        # The Rust tokenizer directly: no Python-side BatchEncoding and no per-token offset tuples.
        return label_encoded(rendered, encode_rendered(tokenizer, rendered))
    batch = tokenizer([r.text for r in rendered], add_special_tokens=False, return_offsets_mapping=True)
    pairs = zip(batch["input_ids"], batch["offset_mapping"], strict=True)
    return [
        Encoded(r.text, ids, *spans_to_labels(ids, offsets, r.trained_spans))
        for r, (ids, offsets) in zip(rendered, pairs, strict=True)
    ]


def encode_conversations(
    chat_format: ChatFormat, tokenizer: Any, conversations: Sequence[Sequence[Message]]
) -> list[Encoded | str]:
    """Render + tokenize a batch; an entry is an error reason (str) where the conversation can't be rendered."""
    rendered = render_batch(chat_format, conversations)
    encoded = iter(tokenize_rendered(tokenizer, [r for r in rendered if not isinstance(r, ForgeError)]))
    return [r.message if isinstance(r, ForgeError) else next(encoded) for r in rendered]


def encode_documents(tokenizer: Any, texts: Sequence[str], max_length: int, overlap: int) -> list[list[list[int]]]:
    """Continued pre-training: each document + EOS, cut into windows of max_length sharing `overlap` tokens."""
    if overlap >= max_length:  # forge.yaml is checked before prepare starts (config/consistency.py)
        raise ValueError(f"overlap {overlap} must be smaller than max_length {max_length}")
    if not texts:  # a chunk whose rows were all rejected (the tokenizer fails on an empty batch)
        return []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    stride = max_length - overlap
    windows: list[list[list[int]]] = []
    for ids in encoded:
        ids = list(ids) + eos
        starts = range(0, max(1, len(ids) - overlap), stride)
        windows.append([ids[start : start + max_length] for start in starts])
    return windows
