"""The transformers engine on hand-wired tiny models: streaming, end-of-turn, the token limit, sampling,
an adapter and its base, the context limit; and the stop-string scanner both engines rely on."""

from __future__ import annotations

import pytest

from forgellm.config.schema import ChatTemplateSection
from forgellm.errors import ForgeError
from forgellm.inference.engines import StopScanner, TransformersEngine, generate
from forgellm.inference.model_choice import build_format

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _engine(model_dir, adapter_dir=None):
    tokenizer, chat_format = build_format(
        model_dir, ChatTemplateSection(name="chatml"), base_dir=model_dir, model_name=None
    )
    return TransformersEngine.load(model_dir, tokenizer, chat_format, "tiny", adapter_dir=adapter_dir)


@pytest.fixture(scope="module")
def paris(paris_model_dir):
    return _engine(paris_model_dir)


def test_streams_the_answer_piece_by_piece_and_stops_at_end_of_turn(paris):
    pieces = list(paris.stream(QUESTION, max_new_tokens=50))
    assert pieces == list("Paris")
    record = paris.last
    assert record.text == "Paris" and record.stopped_at_end_of_turn
    assert record.tokens == 6  # five letters and <|im_end|>
    assert record.seconds > 0 and record.tokens_per_second > 0
    assert paris.label == "tiny (transformers, cpu fp32)"


def test_the_token_limit_is_reported_as_no_end_of_turn(paris):
    record = generate(paris, QUESTION, max_new_tokens=3)
    assert (record.text, record.tokens, record.stopped_at_end_of_turn) == ("Par", 3, False)


def test_sampling_with_a_temperature_follows_the_same_distribution(paris):
    record = generate(paris, QUESTION, max_new_tokens=20, temperature=0.7)
    assert record.text == "Paris" and record.stopped_at_end_of_turn


def test_history_and_system_prompt_are_rendered_into_the_prompt(paris):
    messages = [
        {"role": "system", "content": "Be brief."},
        *QUESTION,
        {"role": "assistant", "content": "Paris"},
        {"role": "user", "content": "And again?"},
    ]
    assert generate(paris, messages).text == "Paris"


def test_adapter_changes_the_answer_and_its_base_view_shares_the_weights(paris_model_dir, lyon_adapter_dir):
    tuned = _engine(paris_model_dir, lyon_adapter_dir)
    base = tuned.without_adapter("base paris")
    assert generate(tuned, QUESTION).text == "Lyon"
    assert generate(base, QUESTION).text == "Paris"
    assert generate(tuned, QUESTION).text == "Lyon"  # the adapter is back on after the base answered
    assert base.model is tuned.model and base.label == "base paris (transformers, cpu fp32)"


def test_a_conversation_longer_than_the_context_is_a_clear_error(paris):
    too_long = [{"role": "user", "content": "x" * 600}]
    with pytest.raises(ForgeError, match="longer than the model's context"):
        generate(paris, too_long)


def test_stop_scanner_holds_back_what_may_become_a_stop_string():
    scanner = StopScanner(["<|im_end|>", "### Instruction:"])
    assert scanner.feed("Hello") == "Hello"
    assert scanner.feed("Hello <|im") == " "
    assert scanner.feed("Hello <|in") == "<|in"  # not a stop string after all
    assert scanner.feed("Hello <|in###") == ""
    assert scanner.feed("Hello <|in### Instruction: more") == "" and scanner.stopped
    assert scanner.emitted == len("Hello <|in")


def test_stop_scanner_waits_for_the_rest_of_a_character_and_flushes_at_the_end():
    scanner = StopScanner(["</s>"])
    assert scanner.feed("caf\ufffd") == "caf"
    assert scanner.feed("café") == "é"
    assert scanner.feed("café </") == " "
    assert scanner.feed("café </", final=True) == "</"
    assert not scanner.stopped
