"""The chat session without a screen: slash commands, the system prompt, one history per model."""

from __future__ import annotations

from forgellm.inference.chat_session import HELP, ChatSession, default_system_prompt
from forgellm.templates import build_chat_format


def test_messages_are_system_prompt_then_history_then_the_new_message():
    session = ChatSession(system_prompt="Be brief.")
    session.record("Hi", ["Hello! "])
    assert session.messages("Capital of France?") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert session.turns == 1


def test_commands():
    session = ChatSession(default_system_prompt="You are a helpful assistant.")
    assert session.command("Hello there") is None
    shown = session.command("/system").message
    assert shown == "System prompt (the chat template's default): You are a helpful assistant."
    assert session.command("/system   Answer in French. ").message == "System prompt set: Answer in French."
    assert session.command("/system").message == "System prompt: Answer in French."
    session.record("Hi", ["Salut"])
    assert session.command("/reset").message == "Conversation cleared."
    assert session.turns == 0 and session.system_prompt == "Answer in French."
    assert session.command("/help").message == HELP
    unknown = session.command("/frobnicate now")
    assert unknown.message.startswith("Unknown command /frobnicate.") and HELP in unknown.message
    assert not unknown.exit
    assert session.command("/exit").exit and session.command("/quit").exit


def test_a_double_slash_sends_a_message_that_starts_with_a_slash():
    session = ChatSession()
    assert session.command("//etc/hosts is a file?") is None
    assert session.message_text("//etc/hosts is a file?") == "/etc/hosts is a file?"
    assert ChatSession(default_system_prompt=None).command("/system").message.startswith("No system prompt")


def test_each_lane_keeps_its_own_answers_and_control_tokens_are_dropped():
    session = ChatSession(lanes=2, forbidden=("<|im_start|>",))
    session.record("Capital?", ["Paris", "Lyon<|im_start|>"])
    assert session.messages("Sure?", lane=0)[1]["content"] == "Paris"
    assert session.messages("Sure?", lane=1)[1]["content"] == "Lyon"


def test_default_system_prompt_comes_from_the_chat_format():
    assert default_system_prompt(build_chat_format("chatml", system_prompt="Be kind.")) == "Be kind."
    assert default_system_prompt(build_chat_format("chatml", system_prompt="")) is None
