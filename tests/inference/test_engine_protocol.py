"""Both engines implement the whole InferenceEngine protocol, so the chat, --compare and evaluation never
probe an engine for a member."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from protocol_support import assert_implements, protocol_members, protocol_problems

from forgellm.config.schema import ChatTemplateSection
from forgellm.inference.engines import Generation, InferenceEngine, LlamaCppEngine, TransformersEngine
from forgellm.inference.model_choice import build_format
from forgellm.templates import ChatFormat


def _chatml(model_dir):
    return build_format(model_dir, ChatTemplateSection(name="chatml"), base_dir=model_dir, model_name=None)


def test_the_protocol_names_what_callers_use():
    assert set(protocol_members(InferenceEngine)) >= {
        "label", "chat_format", "last", "has_adapter", "without_adapter", "stream",
    }  # fmt: skip


def test_the_transformers_engine_and_its_base_view_implement_the_protocol(paris_model_dir, lyon_adapter_dir):
    tokenizer, chat_format = _chatml(paris_model_dir)
    plain = TransformersEngine.load(paris_model_dir, tokenizer, chat_format, "tiny")
    assert_implements(plain, InferenceEngine)
    assert not plain.has_adapter
    tuned = TransformersEngine.load(paris_model_dir, tokenizer, chat_format, "tiny", adapter_dir=lyon_adapter_dir)
    assert tuned.has_adapter
    base = tuned.without_adapter("base")
    assert_implements(base, InferenceEngine)
    assert_implements(base.chat_format, ChatFormat)


def test_the_llama_cpp_engine_implements_the_protocol(paris_model_dir):
    _tokenizer, chat_format = _chatml(paris_model_dir)
    engine = LlamaCppEngine(object(), chat_format, "gguf")  # the constructor only keeps the loaded model
    assert_implements(engine, InferenceEngine)
    assert engine.has_adapter is False  # a GGUF's adapter is merged in: --compare loads the base beside it
    with pytest.raises(AssertionError):
        engine.without_adapter("base")


def test_an_engine_missing_a_member_or_with_another_signature_is_refused():
    class Incomplete:  # no has_adapter / without_adapter, and stream without a temperature
        label = "x"
        chat_format = None
        last: Generation | None = None

        def stream(self, messages: Sequence[dict[str, str]], max_new_tokens: int = 256) -> Iterator[str]:
            yield ""

    problems = protocol_problems(Incomplete(), InferenceEngine)
    assert "has_adapter: missing" in problems and "without_adapter: missing" in problems
    assert any(p.startswith("stream: has no parameter 'temperature'") for p in problems)
