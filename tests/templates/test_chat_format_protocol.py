"""Every concrete chat format implements the whole ChatFormat protocol, so no caller has to probe for a member."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from protocol_support import assert_implements, protocol_members, protocol_problems
from templates_support import family_tokenizer, make_tokenizer

from forgellm.templates import BUILTIN_NAMES, BuiltinChatFormat, ChatFormat, JinjaChatFormat, build_chat_format
from forgellm.templates.messages import Message, RenderedConversation

# Renders the last assistant turn differently from earlier ones: no builtin stands in for it.
ODD_JINJA = (
    "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}{{ '[old]' }}{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
HELLO = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]


def test_the_protocol_names_what_callers_use():
    assert set(protocol_members(ChatFormat)) >= {
        "name", "system_prompt", "forbidden", "add_bos", "stop_strings", "stop_markers", "render_text", "render",
    }  # fmt: skip


@pytest.mark.parametrize("family", BUILTIN_NAMES)
def test_every_builtin_family_implements_the_protocol(family):
    fmt = build_chat_format(family, family_tokenizer(family), system_prompt="Be brief.")
    assert isinstance(fmt, BuiltinChatFormat)
    assert_implements(fmt, ChatFormat)
    assert fmt.add_bos is bool(fmt.bos_text)
    assert fmt.system_prompt == "Be brief." and isinstance(fmt.forbidden, tuple)


@pytest.mark.parametrize("name", ["custom", "tokenizer"])
def test_jinja_formats_implement_the_protocol(name):
    tokenizer = make_tokenizer(chat_template=ODD_JINJA)
    fmt = build_chat_format(name, tokenizer, jinja_template=ODD_JINJA if name == "custom" else None)
    assert isinstance(fmt, JinjaChatFormat) and fmt.name == name
    assert_implements(fmt, ChatFormat)
    assert fmt.add_bos is None  # the tokenizer's own setting decides
    assert fmt.render(HELLO).text == fmt.render_text(HELLO)


def test_a_format_missing_a_member_or_with_another_signature_is_refused():
    @dataclass(frozen=True)
    class Incomplete:  # no add_bos, and render without add_generation_prompt
        name: str = "x"
        system_prompt: str | None = None
        forbidden: tuple[str, ...] = ()
        stop_strings: tuple[str, ...] = ()
        stop_markers: tuple[str, ...] = ()

        def render_text(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
            return ""

        def render(self, messages: Sequence[Message]) -> RenderedConversation:
            return RenderedConversation("", ())

    problems = protocol_problems(Incomplete(), ChatFormat)
    assert any(p.startswith("add_bos: missing") for p in problems)
    assert any(p.startswith("render: has no parameter 'add_generation_prompt'") for p in problems)
