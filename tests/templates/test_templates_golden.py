"""Golden strings for every builtin family (no tokenizer: family default BOS/EOS)."""

from __future__ import annotations

import pytest

from forgellm.templates import BUILTIN_NAMES, build_chat_format

SYS = [{"role": "system", "content": "Be brief."}]
ONE = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
TWO = [*ONE, {"role": "user", "content": "Why?"}, {"role": "assistant", "content": "Because."}]
PROMPT = [*ONE, {"role": "user", "content": "Why?"}]

ALPACA_SYS = "Below is an instruction that describes a task. Write a response that appropriately completes the request."

# family -> (no system, with system, multi-turn, generation prompt after PROMPT, trained text of TWO)
GOLDEN = {
    "chatml": (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n",
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n",
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\nBecause.<|im_end|>\n",
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n",
        "Hello!<|im_end|>Because.<|im_end|>",
    ),
    "llama2": (
        "<s>[INST] Hi [/INST] Hello! </s>",
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s>",
        "<s>[INST] Hi [/INST] Hello! </s><s>[INST] Why? [/INST] Because. </s>",
        "<s>[INST] Hi [/INST] Hello! </s><s>[INST] Why? [/INST]",
        "Hello! </s>Because. </s>",
    ),
    "llama3": (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>",
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>",
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhy?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nBecause.<|eot_id|>",
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhy?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "Hello!<|eot_id|>Because.<|eot_id|>",
    ),
    "alpaca": (
        f"{ALPACA_SYS}\n\n### Instruction:\nHi\n\n### Response:\nHello!</s>",
        "Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello!</s>",
        f"{ALPACA_SYS}\n\n### Instruction:\nHi\n\n### Response:\nHello!</s>\n\n"
        "### Instruction:\nWhy?\n\n### Response:\nBecause.</s>",
        f"{ALPACA_SYS}\n\n### Instruction:\nHi\n\n### Response:\nHello!</s>\n\n"
        "### Instruction:\nWhy?\n\n### Response:\n",
        "Hello!</s>Because.</s>",
    ),
    "gemma": (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n",
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n",
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nWhy?<end_of_turn>\n<start_of_turn>model\nBecause.<end_of_turn>\n",
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nWhy?<end_of_turn>\n<start_of_turn>model\n",
        "Hello!<end_of_turn>Because.<end_of_turn>",
    ),
    "mistral": (
        "<s>[INST] Hi [/INST]Hello!</s>",
        "<s>[INST] Be brief.\n\nHi [/INST]Hello!</s>",
        "<s>[INST] Hi [/INST]Hello!</s>[INST] Why? [/INST]Because.</s>",
        "<s>[INST] Hi [/INST]Hello!</s>[INST] Why? [/INST]",
        "Hello!</s>Because.</s>",
    ),
    "phi3": (
        "<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n",
        "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n",
        "<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\nWhy?<|end|>\n<|assistant|>\nBecause.<|end|>\n",
        "<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\nWhy?<|end|>\n<|assistant|>\n",
        "Hello!<|end|>Because.<|end|>",
    ),
    "zephyr": (
        "<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n",
        "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n",
        "<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n<|user|>\nWhy?</s>\n<|assistant|>\nBecause.</s>\n",
        "<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n<|user|>\nWhy?</s>\n<|assistant|>\n",
        "Hello!</s>Because.</s>",
    ),
}


def test_every_family_has_a_golden():
    assert set(GOLDEN) == set(BUILTIN_NAMES)


@pytest.mark.parametrize("family", sorted(GOLDEN))
def test_golden_text(family):
    no_sys, with_sys, multi, gen, _ = GOLDEN[family]
    fmt = build_chat_format(family)
    assert fmt.render_text(ONE) == no_sys
    assert fmt.render_text(SYS + ONE) == with_sys
    assert fmt.render_text(TWO) == multi
    assert fmt.render_text(PROMPT, add_generation_prompt=True) == gen


@pytest.mark.parametrize("family", sorted(GOLDEN))
def test_golden_trained_text_includes_end_of_turn(family):
    fmt = build_chat_format(family)
    rendered = fmt.render(TWO)
    assert rendered.trained_text() == GOLDEN[family][4]
    # The generation prompt is never trained and the prompt form is a prefix of the full form.
    assert fmt.render_text(TWO).startswith(fmt.render_text(PROMPT, add_generation_prompt=True))


@pytest.mark.parametrize("family", sorted(GOLDEN))
def test_system_prompt_parameter(family):
    # A configured system prompt renders exactly like an explicit system message...
    fmt = build_chat_format(family, system_prompt="Be brief.")
    assert fmt.render_text(ONE) == GOLDEN[family][1]
    # ...and an explicit system message in the conversation wins over it.
    assert fmt.render_text([{"role": "system", "content": "Be brief."}, *ONE]) == GOLDEN[family][1]


def test_empty_system_prompt_disables_alpaca_default():
    fmt = build_chat_format("alpaca", system_prompt="")
    assert fmt.render_text(ONE) == "### Instruction:\nHi\n\n### Response:\nHello!</s>"


def test_custom_role_names():
    fmt = build_chat_format("chatml", role_names={"assistant": "bot", "user": "human"})
    assert fmt.render_text(PROMPT, add_generation_prompt=True) == (
        "<|im_start|>human\nHi<|im_end|>\n<|im_start|>bot\nHello!<|im_end|>\n"
        "<|im_start|>human\nWhy?<|im_end|>\n<|im_start|>bot\n"
    )
    alpaca = build_chat_format("alpaca", system_prompt="", role_names={"user": "Input", "assistant": "Output"})
    assert alpaca.render_text(ONE) == "### Input:\nHi\n\n### Output:\nHello!</s>"


def test_add_bos_parameter():
    assert build_chat_format("llama3", add_bos=False).render_text(ONE).startswith("<|start_header_id|>")
    assert build_chat_format("llama2", add_bos=False).render_text(TWO) == (
        "[INST] Hi [/INST] Hello! </s>[INST] Why? [/INST] Because. </s>"
    )
    assert build_chat_format("zephyr", add_bos=True).render_text(ONE).startswith("<s><|user|>")


def test_braces_and_placeholders_in_content_are_literal():
    fmt = build_chat_format("chatml")
    msgs = [{"role": "user", "content": "{content} {eos} {role}"}, {"role": "assistant", "content": "{bos}"}]
    text = fmt.render_text(msgs)
    assert "{content} {eos} {role}" in text and "\n{bos}<|im_end|>" in text


def test_stop_strings():
    assert build_chat_format("chatml").stop_strings == ("<|im_end|>",)
    assert build_chat_format("llama3").stop_strings == ("<|eot_id|>", "<|end_of_text|>")
    assert build_chat_format("gemma").stop_strings == ("<end_of_turn>", "<eos>")
    assert "</s>" in build_chat_format("zephyr").stop_strings
