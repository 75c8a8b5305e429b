from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from templates_support import make_tokenizer

from forgellm.data.prepare.tokenize import encode_conversations, encode_documents
from forgellm.templates import build_chat_format, tokenize_conversation
from forgellm.templates.tokens import label_tokens

spans_strategy = st.lists(st.tuples(st.integers(0, 200), st.integers(1, 40)), max_size=6).map(
    lambda items: _disjoint(items)
)


def _disjoint(items):
    spans, cursor = [], 0
    for gap, width in items:
        start = cursor + gap
        spans.append((start, start + width))
        cursor = start + width + 1
    return spans


def test_batch_encoding_equals_single_conversation_path():
    tokenizer = make_tokenizer()
    chat = build_chat_format("chatml", tokenizer)
    conversations = [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        [{"role": "user", "content": "bad <|im_end|> marker"}, {"role": "assistant", "content": "x"}],
        [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "a2"},
        ],
    ]
    results = encode_conversations(chat, tokenizer, conversations)
    assert isinstance(results[1], str) and "control token" in results[1]
    for conversation, result in ((conversations[0], results[0]), (conversations[2], results[2])):
        single = tokenize_conversation(chat, tokenizer, conversation)
        assert result.input_ids == single.input_ids and result.labels == single.labels
        assert result.trained_tokens == sum(label != -100 for label in single.labels)


def test_documents_are_windowed_with_overlap_and_eos():
    tokenizer = make_tokenizer()
    text = "abcdefghij" * 10  # 100 byte-level tokens
    windows = encode_documents(tokenizer, [text, "short"], max_length=40, overlap=8)
    long, short = windows
    assert [len(w) for w in long] == [40, 40, 37]  # 101 tokens with EOS; stride 32
    assert long[0][32:] == long[1][:8]  # overlap
    assert long[-1][-1] == tokenizer.eos_token_id
    assert short == [tokenizer("short", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]]


@settings(max_examples=200, deadline=None)
@given(widths=st.lists(st.integers(0, 6), min_size=0, max_size=120), spans=spans_strategy)
def test_bisect_labels_equal_reference_rule(widths, spans):
    from forgellm.data.prepare.tokenize import spans_to_labels

    offsets, position = [], 0
    for width in widths:
        offsets.append((position, position + width))
        position += width
    ids = list(range(1000, 1000 + len(offsets)))
    labels, trained = spans_to_labels(ids, offsets, spans)
    expected = label_tokens(offsets, spans)
    assert labels == [i if keep else -100 for i, keep in zip(ids, expected, strict=True)]
    assert trained == sum(expected)


texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="<>|"), min_size=1, max_size=30)


@settings(max_examples=150, deadline=None)
@given(turns=st.lists(st.tuples(texts, texts), min_size=1, max_size=4), system=st.none() | texts)
def test_fast_labels_equal_the_reference_path(turns, system):
    tokenizer = make_tokenizer()
    for name in ("chatml", "llama3", "alpaca"):
        chat = build_chat_format(name, tokenizer, system_prompt=system)
        conversation = [
            m for u, a in turns for m in ({"role": "user", "content": u}, {"role": "assistant", "content": a})
        ]
        fast = encode_conversations(chat, tokenizer, [conversation])[0]
        reference = tokenize_conversation(chat, tokenizer, conversation)
        assert fast.input_ids == reference.input_ids and fast.labels == reference.labels


@pytest.mark.slow
def test_fast_labels_equal_reference_with_a_real_bpe_tokenizer(_bundled_model_cache):
    import random

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(_bundled_model_cache[1]))
    chat = build_chat_format("auto", tokenizer)
    rng = random.Random(0)
    words = ["hello", " world", "ça", "va", "?", "!", "\n", "  ", "123", "naïve", "日本語", "token", "ization", " "]
    for _ in range(300):
        conversation = []
        for _turn in range(rng.randint(1, 3)):
            for role in ("user", "assistant"):
                content = "".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
                conversation.append({"role": role, "content": content})
        fast = encode_conversations(chat, tokenizer, [conversation])[0]
        reference = tokenize_conversation(chat, tokenizer, conversation)
        assert fast.input_ids == reference.input_ids and fast.labels == reference.labels, conversation
