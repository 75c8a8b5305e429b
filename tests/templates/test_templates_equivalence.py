from __future__ import annotations

import pytest
from templates_support import make_tokenizer

from forgellm.templates import BuiltinChatFormat, JinjaChatFormat, build_chat_format, to_hf_jinja

CHATML_WITH_DEFAULT = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nDefault helper.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_TRIMMING = CHATML_WITH_DEFAULT.replace("m['content']", "m['content'] | trim")
CONVERSATION = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


def test_tokenizer_template_equal_to_chatml_renders_with_the_builtin():
    tok = make_tokenizer(bos=None, eos="<|im_end|>", chat_template=CHATML_WITH_DEFAULT)
    fmt = build_chat_format("tokenizer", tok)
    assert isinstance(fmt, BuiltinChatFormat) and fmt.name == "tokenizer" and fmt.spec.name == "chatml"
    assert fmt.system_prompt == "Default helper."
    jinja = JinjaChatFormat("tokenizer", CHATML_WITH_DEFAULT, tok)
    for generation in (False, True):
        messages = CONVERSATION[:1] if generation else CONVERSATION
        assert fmt.render_text(messages, generation) == jinja.render_text(messages, generation)
    assert fmt.render(CONVERSATION).trained_spans == jinja.render(CONVERSATION).trained_spans
    assert to_hf_jinja(fmt) == CHATML_WITH_DEFAULT  # exports keep the model's own template


def test_configured_system_prompt_is_kept():
    tok = make_tokenizer(bos=None, eos="<|im_end|>", chat_template=CHATML_WITH_DEFAULT)
    fmt = build_chat_format("tokenizer", tok, system_prompt="Mine.")
    assert fmt.render_text(CONVERSATION).startswith("<|im_start|>system\nMine.<|im_end|>")


@pytest.mark.parametrize("template", [CHATML_TRIMMING, "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"])
def test_templates_that_differ_stay_jinja(template):
    tok = make_tokenizer(bos=None, eos="<|im_end|>", chat_template=template)
    assert isinstance(build_chat_format("tokenizer", tok), JinjaChatFormat)
