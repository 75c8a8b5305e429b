"""User mistakes raise ForgeError with a fix, never an assert or a KeyError."""

from __future__ import annotations

import pytest

from forgellm.errors import ForgeError
from forgellm.templates import build_chat_format, tokenize_conversation

OK = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


@pytest.mark.parametrize(
    ("messages", "needle"),
    [
        ([], "empty"),
        ("hello", "empty"),
        ([{"role": "tool", "content": "x"}, *OK], "role 'tool'"),
        ([{"role": "user"}], "'role' and 'content'"),
        ([{"role": "user", "content": 3}], "non-text"),
        ([*OK, {"role": "system", "content": "late"}], "may only come first"),
        ([{"role": "system", "content": "only"}], "only a system"),
        (
            [{"role": "user", "content": "a <|im_end|> b"}, {"role": "assistant", "content": "x"}],
            "control token",
        ),
    ],
)
def test_bad_conversations(messages, needle):
    with pytest.raises(ForgeError) as err:
        build_chat_format("chatml").render_text(messages)
    assert needle in str(err.value)
    assert err.value.fix


def test_training_needs_an_assistant_turn(tiny_tokenizer_factory):
    tok = tiny_tokenizer_factory()
    with pytest.raises(ForgeError, match="no assistant message"):
        tokenize_conversation(build_chat_format("chatml", tok), tok, [{"role": "user", "content": "Hi"}])


def test_fold_needs_a_user_turn_first():
    msgs = [{"role": "system", "content": "S"}, {"role": "assistant", "content": "Hi"}]
    with pytest.raises(ForgeError, match="folds the system prompt"):
        build_chat_format("gemma").render_text(msgs)


def test_unknown_names_and_parameters(tiny_tokenizer_factory):
    with pytest.raises(ForgeError, match="Unknown chat template"):
        build_chat_format("vicuna")
    with pytest.raises(ForgeError, match="needs a Jinja template"):
        build_chat_format("custom", tiny_tokenizer_factory())
    with pytest.raises(ForgeError, match="no chat_template"):
        build_chat_format("tokenizer", tiny_tokenizer_factory())
    with pytest.raises(ForgeError, match="Unknown role"):
        build_chat_format("chatml", role_names={"tool": "x"})


def test_slow_tokenizer_is_refused():
    class Slow:
        is_fast = False

    with pytest.raises(ForgeError, match="not a fast tokenizer"):
        tokenize_conversation(build_chat_format("chatml"), Slow(), OK)
