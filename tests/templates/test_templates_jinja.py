"""HF Jinja export of builtin templates, and formats backed by a Jinja template."""

from __future__ import annotations

import pytest
from templates_support import family_tokenizer, hf_render, make_tokenizer, trained_ids

from forgellm.errors import ForgeError
from forgellm.templates import BUILTIN_NAMES, build_chat_format, to_hf_jinja, tokenize_conversation

SYS = [{"role": "system", "content": "Be brief."}]
TWO = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Why?"},
    {"role": "assistant", "content": "Because."},
]
CONVERSATIONS = [TWO[:2], SYS + TWO[:2], TWO, SYS + TWO]

# A ChatML template in the style of Qwen 2: prefix-consistent, default system prompt.
QWEN_STYLE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are helpful.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Renders the last assistant turn differently from earlier ones: not prefix-consistent.
INCONSISTENT = (
    "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}{{ '[old]' }}{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.mark.parametrize("family", BUILTIN_NAMES)
def test_hf_jinja_renders_like_render_text(family):
    tok = family_tokenizer(family)
    fmt = build_chat_format(family, tok)
    template = to_hf_jinja(fmt)
    for msgs in CONVERSATIONS:
        assert hf_render(tok, template, msgs) == fmt.render_text(msgs)
        prompt = msgs[:-1]
        assert hf_render(tok, template, prompt, True) == fmt.render_text(prompt, add_generation_prompt=True)


def test_hf_jinja_bakes_in_parameters():
    tok = family_tokenizer("alpaca")
    fmt = build_chat_format("alpaca", tok, system_prompt='Say "hi" — ünïcode 😀\n', role_names={"user": "Q"})
    assert hf_render(tok, to_hf_jinja(fmt), TWO) == fmt.render_text(TWO)
    assert "### Q:" in fmt.render_text(TWO)


def test_hf_jinja_refuses_unknown_roles():
    tok = family_tokenizer("chatml")
    with pytest.raises(Exception, match="Only system"):
        hf_render(tok, to_hf_jinja(build_chat_format("chatml", tok)), [{"role": "tool", "content": "x"}])


def test_custom_template_spans_by_prefix_diffing():
    tok = make_tokenizer(bos=None, eos="<|im_end|>")
    fmt = build_chat_format("custom", tok, jinja_template=QWEN_STYLE)
    rendered = fmt.render(TWO)
    assert rendered.text.startswith("<|im_start|>system\nYou are helpful.<|im_end|>\n")
    assert rendered.trained_text() == "Hello!<|im_end|>Because.<|im_end|>"
    out = tokenize_conversation(fmt, tok, TWO)
    assert tok.decode(trained_ids(out)) == "Hello!<|im_end|>Because.<|im_end|>"
    # Same as the builtin chatml with the same system prompt.
    builtin = build_chat_format("chatml", tok, system_prompt="You are helpful.")
    assert builtin.render_text(TWO) == rendered.text
    assert tokenize_conversation(builtin, tok, TWO) == out
    assert to_hf_jinja(fmt) == QWEN_STYLE


def test_tokenizer_template_and_system_prompt_injection():
    tok = make_tokenizer(bos=None, eos="<|im_end|>", chat_template=QWEN_STYLE)
    fmt = build_chat_format("tokenizer", tok, system_prompt="Custom.")
    assert fmt.render_text(TWO[:1], add_generation_prompt=True) == (
        "<|im_start|>system\nCustom.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_not_prefix_consistent_template_is_refused():
    tok = make_tokenizer(bos=None, eos="<|im_end|>")
    fmt = build_chat_format("custom", tok, jinja_template=INCONSISTENT)
    with pytest.raises(ForgeError, match="not prefix-consistent") as err:
        fmt.render(TWO)
    assert "chatml" in err.value.fix


def test_broken_template_is_a_forge_error():
    tok = make_tokenizer()
    fmt = build_chat_format("custom", tok, jinja_template="{{ raise_exception('nope') }}")
    with pytest.raises(ForgeError, match="nope"):
        fmt.render_text(TWO)
