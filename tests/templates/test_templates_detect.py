"""Detection of the template family, vocabulary compatibility, the pad == eos warning."""

from __future__ import annotations

import pytest
from templates_support import family_tokenizer, make_tokenizer

from forgellm.errors import ErrorCode, ForgeError
from forgellm.templates import build_chat_format, detect_template, fitting_templates, pad_token_warning

CHATML_ONLY = ("<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>")
LLAMA3_VOCAB = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<unk>",
)


@pytest.fixture(scope="module")
def chatml_tok():
    return make_tokenizer(bos="<|im_start|>", eos="<|im_end|>", pad=None, specials=CHATML_ONLY)


@pytest.fixture(scope="module")
def llama3_tok():
    return make_tokenizer(bos="<|begin_of_text|>", eos="<|end_of_text|>", pad=None, specials=LLAMA3_VOCAB)


@pytest.fixture(scope="module")
def plain_tok():
    return make_tokenizer(bos="<s>", eos="</s>", pad=None, specials=("<s>", "</s>", "<unk>"))


def test_tokenizer_template_wins(chatml_tok):
    tok = make_tokenizer(chat_template="{{ messages[0]['content'] }}")
    assert detect_template("Qwen/Qwen2-0.5B", {"model_type": "qwen2"}, tok) == "tokenizer"


@pytest.mark.parametrize(
    ("name", "model_type", "expected"),
    [
        ("Qwen/Qwen2.5-0.5B-Instruct", "qwen2", "chatml"),
        (None, "qwen2", "chatml"),
        ("google/gemma-2-2b-it", "gemma2", "gemma"),
        (None, "gemma", "gemma"),
        ("mistralai/Mistral-7B-Instruct-v0.1", "mistral", "mistral"),
        ("microsoft/Phi-3-mini-4k-instruct", "phi3", "phi3"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "llama", "chatml"),
        ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", "llama", "zephyr"),
        ("meta-llama/Llama-2-7b-chat-hf", "llama", "llama2"),
        ("some/model", None, "alpaca"),
    ],
)
def test_detect_by_name_and_model_type(plain_tok, name, model_type, expected):
    config = {"model_type": model_type} if model_type else None
    assert detect_template(name, config, plain_tok) == expected


def test_llama_with_eot_in_vocab_is_llama3(llama3_tok):
    assert detect_template("meta-llama/Meta-Llama-3-8B", {"model_type": "llama"}, llama3_tok) == "llama3"
    assert detect_template("my-finetune", {"model_type": "llama"}, llama3_tok) == "llama3"


def test_detect_by_vocab(chatml_tok, llama3_tok):
    assert detect_template(None, None, chatml_tok) == "chatml"
    assert detect_template(None, None, llama3_tok) == "llama3"
    assert detect_template(None, None, None) == "alpaca"


def test_auto_builds_the_detected_format(chatml_tok):
    fmt = build_chat_format("auto", chatml_tok, model_name="local/model")
    assert fmt.name == "chatml"


def test_incompatible_template_is_refused(chatml_tok):
    with pytest.raises(ForgeError) as err:
        build_chat_format("llama3", chatml_tok, model_name="Qwen/Qwen2-0.5B")
    message = str(err.value)
    assert "'llama3'" in message and "Qwen/Qwen2-0.5B" in message
    assert "<|start_header_id|>" in message and "<|eot_id|>" in message
    assert "chatml" in err.value.fix and "alpaca" in err.value.fix
    assert "gemma" not in err.value.fix
    # What diagnosis reads: the code and the fitting templates as data, not the words above.
    assert err.value.code == ErrorCode.TEMPLATE_MISFIT
    assert err.value.data["template"] == "llama3" and err.value.data["fits"][0] == fitting_templates(chatml_tok)[0]
    assert "<|eot_id|>" in err.value.data["missing"]


def test_fitting_templates(chatml_tok, plain_tok):
    assert set(fitting_templates(chatml_tok)) == {"chatml", "alpaca", "mistral", "zephyr", "llama2"}
    assert "chatml" not in fitting_templates(plain_tok)


def test_template_needing_eos_is_refused_without_one():
    tok = make_tokenizer(bos=None, eos=None, pad=None, specials=("<|im_start|>", "<|im_end|>"))
    with pytest.raises(ForgeError, match="EOS"):
        build_chat_format("alpaca", tok)
    build_chat_format("chatml", tok)  # ChatML never prints the EOS token


def test_pad_equals_eos_warning():
    tok = make_tokenizer(bos=None, eos="<|im_end|>", pad="<|im_end|>")
    warning = pad_token_warning(build_chat_format("chatml", tok), tok)
    assert warning is not None and "pad == eos" in warning and "<|im_end|>" in warning
    other = make_tokenizer(bos=None, eos="<|im_end|>", pad="<pad>")
    assert pad_token_warning(build_chat_format("chatml", other), other) is None
    zephyr = family_tokenizer("zephyr", pad="</s>")
    assert "pad == eos" in pad_token_warning(build_chat_format("zephyr", zephyr), zephyr)
