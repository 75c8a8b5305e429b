"""Token rendering: (input_ids, labels) with loss only on assistant answers and their end-of-turn.

The text is rendered once with character spans of the trained text and tokenized ONCE, so the ids
always equal ``tokenizer(render_text(...), add_special_tokens=False)``. Labels are assigned from the
fast tokenizer's offset mapping.

Boundary rule: a token is trained when its END lies inside a trained span (start < end <= span end
and end > span start). A token that straddles the start of an answer (e.g. llama2's " " + first
word) is trained, because predicting it means predicting the answer's first characters; a token that
straddles the end of an answer into untrained text is not trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from forgellm.errors import ErrorCode, ForgeError

from .messages import ChatFormat, Message, require_assistant

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenizedConversation:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX (-100) where no loss is taken


def _require_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ForgeError(
            f"The tokenizer {type(tokenizer).__name__} is not a fast tokenizer, so Forge cannot map tokens "
            "back to characters to build the loss mask.",
            fix="Load the tokenizer with use_fast=True (it needs a tokenizer.json, or the 'tokenizers' package).",
            code=ErrorCode.TOKENIZER_UNSUPPORTED,
        )


def label_tokens(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[bool]:
    """For each token (start, end) in characters: is it trained? Both lists are sorted by position."""
    trained: list[bool] = []
    j = 0
    for start, end in offsets:
        point = end if end > start else start + 1  # zero-width tokens are judged by their position
        while j < len(spans) and spans[j][1] < point:
            j += 1
        trained.append(j < len(spans) and spans[j][0] < point <= spans[j][1])
    return trained


def tokenize_conversation(
    chat_format: ChatFormat, tokenizer: Any, messages: Sequence[Message]
) -> TokenizedConversation:
    """Render ``messages`` with ``chat_format`` and tokenize it for supervised fine-tuning."""
    require_assistant(messages)
    _require_fast(tokenizer)
    rendered = chat_format.render(messages, add_generation_prompt=False)
    enc = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    mask = label_tokens(offsets, rendered.trained_spans)
    labels = [tok if keep else IGNORE_INDEX for tok, keep in zip(ids, mask, strict=True)]
    return TokenizedConversation(input_ids=ids, labels=labels)
