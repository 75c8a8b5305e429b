"""Token rendering on the tiny in-memory tokenizer: ids == tokenizer(text), labels on answers + EOT."""

from __future__ import annotations

import pytest
from templates_support import family_tokenizer, make_tokenizer, trained_ids

from forgellm.templates import BUILTIN_NAMES, IGNORE_INDEX, build_chat_format, tokenize_conversation
from forgellm.templates.tokens import label_tokens

TWO = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Why?"},
    {"role": "assistant", "content": "Because."},
]


@pytest.mark.parametrize("family", BUILTIN_NAMES)
def test_ids_match_text_and_labels_cover_answers_and_end_of_turn(family):
    tok = family_tokenizer(family)
    fmt = build_chat_format(family, tok)
    out = tokenize_conversation(fmt, tok, TWO)
    text = fmt.render_text(TWO)
    assert out.input_ids == tok(text, add_special_tokens=False)["input_ids"]
    assert len(out.labels) == len(out.input_ids)
    eot = fmt.render(TWO).trained_text().split("Hello!")[1].split("Because.")[0]
    assert tok.decode(trained_ids(out)) == f"Hello!{eot}Because.{eot}"
    assert tok.decode(trained_ids(out)) == fmt.render(TWO).trained_text()


@pytest.mark.parametrize("family", ["chatml", "llama3", "gemma", "phi3", "zephyr", "mistral", "alpaca"])
def test_end_of_turn_token_is_a_trained_single_token(family):
    tok = family_tokenizer(family)
    fmt = build_chat_format(family, tok)
    out = tokenize_conversation(fmt, tok, TWO[1:3])
    eot = fmt.stop_markers[0]
    eot_id = tok.convert_tokens_to_ids(eot)
    # The last trained token is the end-of-turn marker, and it is labelled with itself.
    trained = [i for i, lab in enumerate(out.labels) if lab != IGNORE_INDEX]
    assert out.input_ids[trained[-1]] == eot_id == out.labels[trained[-1]]


def test_prompt_tokens_are_masked():
    tok = family_tokenizer("chatml")
    out = tokenize_conversation(build_chat_format("chatml", tok), tok, TWO)
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    # No <|im_start|> (every header) and no token of system/user text is trained.
    assert all(lab != im_start for lab in out.labels)
    assert "Be brief" not in tok.decode(trained_ids(out))
    assert "Why?" not in tok.decode(trained_ids(out))


def test_tokenizer_bos_and_eos_are_used():
    tok = make_tokenizer(bos="<s>", eos="<|endoftext|>")
    fmt = build_chat_format("zephyr", tok)
    assert fmt.render_text(TWO[1:3]) == "<|user|>\nHi<|endoftext|>\n<|assistant|>\nHello!<|endoftext|>\n"


def test_alpaca_adds_bos_exactly_when_the_tokenizer_does():
    with_bos = make_tokenizer(adds_bos=True)
    without = make_tokenizer(adds_bos=False)
    assert build_chat_format("alpaca", with_bos, system_prompt="").render_text(TWO[1:3]).startswith("<s>###")
    assert build_chat_format("alpaca", without, system_prompt="").render_text(TWO[1:3]).startswith("###")


def test_boundary_rule_token_trained_when_its_end_is_inside_a_span():
    spans = [(5, 10)]
    offsets = [(0, 5), (3, 6), (6, 10), (9, 12), (10, 12)]
    # (3,6) straddles the start: its end is inside -> trained; (9,12) straddles the end -> not trained.
    assert label_tokens(offsets, spans) == [False, True, True, False, False]
    # Zero-width tokens are judged by their position.
    assert label_tokens([(5, 5), (7, 7), (10, 10)], spans) == [True, True, False]


def test_generation_prompt_is_a_token_prefix_of_the_training_ids():
    tok = family_tokenizer("llama3")
    fmt = build_chat_format("llama3", tok)
    prompt = fmt.render_text(TWO[:4], add_generation_prompt=True)
    full = tokenize_conversation(fmt, tok, TWO).input_ids
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert full[: len(prompt_ids)] == prompt_ids
