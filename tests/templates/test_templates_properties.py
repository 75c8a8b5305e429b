"""Property tests: for any valid conversation, the four renderings agree and labels are exact."""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from templates_support import family_tokenizer, hf_render, trained_ids

from forgellm.errors import ForgeError
from forgellm.templates import (
    BUILTIN_NAMES,
    IGNORE_INDEX,
    build_chat_format,
    to_hf_jinja,
    tokenize_conversation,
)

# Fragments that look like markers of some family, mixed into otherwise random text.
LOOKALIKES = [
    "<|im_start|",
    "im_end|>",
    "[INST]",
    "[/INST]",
    "<<SYS>>",
    "### Response:",
    "{eos}",
    "{content}",
    "<start_of_turn",
    "<|",
    "|>",
    "</",
    "<|end|",
    "\n\n",
    " ",
    "<|im_end|>",
    "</s>",
    "<eos>",
]
TEXT = st.lists(
    st.one_of(st.text(max_size=12), st.sampled_from(LOOKALIKES), st.sampled_from(["é", "😀", "中文", "\r\n"])),
    max_size=5,
).map("".join)


@st.composite
def conversations(draw):
    msgs = []
    if draw(st.booleans()):
        msgs.append({"role": "system", "content": draw(TEXT)})
    # Fold-into-user families need a user turn right after a system prompt; otherwise any order.
    roles = draw(st.lists(st.sampled_from(["user", "assistant"]), min_size=1, max_size=6))
    if msgs or draw(st.booleans()):
        roles[0] = "user"
    if "assistant" not in roles:
        roles.append("assistant")
    msgs += [{"role": r, "content": draw(TEXT)} for r in roles]
    return msgs


@cache
def _setup(family):
    tok = family_tokenizer(family)
    fmt = build_chat_format(family, tok)
    return tok, fmt, to_hf_jinja(fmt)


def _has_control_token(fmt, msgs):
    return any(marker in m["content"] for m in msgs for marker in fmt.forbidden)


PROPS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("family", BUILTIN_NAMES)
@PROPS
@given(msgs=conversations())
def test_renderings_agree_and_labels_are_exact(family, msgs):
    tok, fmt, jinja = _setup(family)
    if _has_control_token(fmt, msgs):
        with pytest.raises(ForgeError, match="control token"):
            fmt.render(msgs)
        return
    rendered = fmt.render(msgs)
    out = tokenize_conversation(fmt, tok, msgs)
    # Text and token renderings agree: the ids are the tokenization of the text.
    assert out.input_ids == tok(rendered.text, add_special_tokens=False)["input_ids"]
    # The trained text is exactly each answer followed by its end-of-turn marker.
    eot = fmt._fill(fmt.spec.end_of_turn)
    expected = "".join(m["content"] + eot for m in msgs if m["role"] == "assistant")
    assert rendered.trained_text() == expected
    assert tok.decode(trained_ids(out)) == expected
    # Labels sit exactly on the characters of the trained spans.
    enc = tok(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    trained_chars = {i for a, b in rendered.trained_spans for i in range(a, b)}
    for (a, b), label, tid in zip(enc["offset_mapping"], out.labels, out.input_ids, strict=True):
        assert (label != IGNORE_INDEX) == all(i in trained_chars for i in range(a, b))
        assert label in (IGNORE_INDEX, tid)
    # The exported HF Jinja template renders the same text, with and without a generation prompt.
    assert hf_render(tok, jinja, msgs) == rendered.text
    prompt = msgs[:-1]
    if msgs[-1]["role"] == "assistant" and any(m["role"] != "system" for m in prompt):
        gen = fmt.render_text(prompt, add_generation_prompt=True)
        assert hf_render(tok, jinja, prompt, True) == gen
        assert rendered.text.startswith(gen)


@pytest.mark.parametrize("family", [f for f in BUILTIN_NAMES if f != "llama2"])
@PROPS
@given(msgs=conversations())
def test_prefix_diffing_of_exported_template_finds_the_same_spans(family, msgs):
    # llama2 is excluded: its empty generation prompt puts the " " before each answer into the diff.
    tok, fmt, jinja = _setup(family)
    if _has_control_token(fmt, msgs) or any(m in c["content"] for c in msgs for m in tok.all_special_tokens):
        return
    if not msgs[0]["role"] == "user" and not (msgs[0]["role"] == "system" and len(msgs) > 1):
        return  # an answer first has no history to diff against
    custom = build_chat_format("custom", tok, jinja_template=jinja)
    assert custom.render(msgs) == fmt.render(msgs)
    assert tokenize_conversation(custom, tok, msgs) == tokenize_conversation(fmt, tok, msgs)
