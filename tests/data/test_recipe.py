"""to_example: every format, role mapping, history, system prompts, and every rejection reason."""

from __future__ import annotations

import json

import pytest

from forgellm.config.schema import RecipeSection, TranscriptSection
from forgellm.data.prepare.recipe import to_example
from forgellm.data.read.records import RecipeError, Record
from forgellm.errors import ForgeError


def rec(**fields) -> Record:
    return Record(7, fields, "data.jsonl")


def msgs(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in pairs]


def roles(example) -> list[str]:
    return [m["role"] for m in example.messages]


# ------------------------------------------------------------------------------------------ formats


def test_messages_format_keeps_line_source_and_cleans():
    example = to_example(
        rec(messages=msgs(("user", "  hi \r\n"), ("assistant", "hello  "))), "messages", RecipeSection()
    )
    assert example.messages == msgs(("user", "hi"), ("assistant", "hello"))
    assert (example.line, example.source, example.text) == (7, "data.jsonl", None)


def test_messages_as_json_string_column():
    example = to_example(
        rec(chat=json.dumps(msgs(("user", "q"), ("assistant", "a")))),
        "messages",
        RecipeSection(columns={"messages": "chat"}),
    )
    assert roles(example) == ["user", "assistant"]


def test_openai_text_parts_and_tool_calls_become_text():
    conversation = [
        {"role": "user", "content": [{"type": "text", "text": "weather "}, {"type": "text", "text": "in Oslo?"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "function": {"name": "weather"}}]},
        {"role": "tool", "content": '{"temp": 3}'},
        {"role": "assistant", "content": "3 degrees."},
    ]
    example = to_example(rec(messages=conversation), "messages", RecipeSection())
    assert roles(example) == ["user", "assistant", "user", "assistant"]
    assert example.messages[0]["content"] == "weather in Oslo?"
    assert json.loads(example.messages[1]["content"])[0]["function"]["name"] == "weather"


def test_sharegpt_default_roles_tools_and_system_column():
    conv = [
        {"from": "human", "value": "find a recipe"},
        {"from": "function_call", "value": '{"name": "s"}'},
        {"from": "observation", "value": '{"r": []}'},
        {"from": "gpt", "value": "none found"},
    ]
    example = to_example(rec(conversations=conv, tools="[{}]", system="Be brief."), "sharegpt", RecipeSection())
    assert roles(example) == ["system", "user", "assistant", "user", "assistant"]
    assert example.messages[0]["content"] == "Be brief."
    assert example.messages[2]["content"] == '{"name": "s"}'
    assert example.extra["tools"] == "[{}]"


def test_role_map_overrides_and_drop():
    conv = [{"from": "Customer", "value": "q"}, {"from": "note", "value": "internal"}, {"from": "Agent", "value": "a"}]
    recipe = RecipeSection(role_map={"customer": "user", "agent": "assistant", "note": "drop"})
    example = to_example(rec(conversations=conv), "sharegpt", recipe)
    assert example.messages == msgs(("user", "q"), ("assistant", "a"))


def test_consecutive_same_role_turns_are_merged():
    example = to_example(
        rec(messages=msgs(("user", "a"), ("user", "b"), ("assistant", "c"))), "messages", RecipeSection()
    )
    assert example.messages == msgs(("user", "a\n\nb"), ("assistant", "c"))


def test_alpaca_with_input_history_and_system():
    record = rec(
        instruction="Translate",
        input="hello",
        output="hallo",
        system="You translate.",
        history=[["hi", "hey"], ["how are you", "fine"]],
    )
    example = to_example(record, "alpaca", RecipeSection())
    assert example.messages == msgs(
        ("system", "You translate."),
        ("user", "hi"),
        ("assistant", "hey"),
        ("user", "how are you"),
        ("assistant", "fine"),
        ("user", "Translate\n\nhello"),
        ("assistant", "hallo"),
    )


def test_alpaca_without_optional_columns_and_empty_instruction_uses_input():
    example = to_example(rec(instruction="", input="just the input", output="ok"), "alpaca", RecipeSection())
    assert example.messages == msgs(("user", "just the input"), ("assistant", "ok"))
    example = to_example(rec(instruction="Do it", output="done"), "alpaca", RecipeSection())
    assert example.messages == msgs(("user", "Do it"), ("assistant", "done"))


def test_alpaca_history_as_json_string():
    example = to_example(rec(instruction="q2", output="a2", history='[["q1", "a1"]]'), "alpaca", RecipeSection())
    assert roles(example) == ["user", "assistant", "user", "assistant"]


def test_prompt_completion_and_qa_with_label_and_date():
    example = to_example(rec(prompt="2+2?", completion="4"), "prompt_completion", RecipeSection())
    assert example.messages == msgs(("user", "2+2?"), ("assistant", "4"))
    recipe = RecipeSection(columns={"user": "Q", "assistant": "A", "label": "cat", "date": "day"})
    example = to_example(rec(Q="Where?", A="Here.", cat=" billing ", day="2024-01-02"), "qa", recipe)
    assert example.messages == msgs(("user", "Where?"), ("assistant", "Here."))
    assert (example.label, example.date) == ("billing", "2024-01-02")
    example = to_example(rec(Q="Where?", A="Here.", cat="", day=None), "qa", recipe)
    assert (example.label, example.date) == (None, None)


def test_qa_input_column_is_appended():
    recipe = RecipeSection(columns={"user": "desc", "assistant": "res", "input": "subject"})
    example = to_example(rec(desc="It broke.", res="Fixed.", subject="Printer"), "qa", recipe)
    assert example.messages[0]["content"] == "It broke.\n\nPrinter"


def test_numbers_are_text():
    example = to_example(rec(question=12, answer=3.5), "qa", RecipeSection())
    assert example.messages == msgs(("user", "12"), ("assistant", "3.5"))


def test_system_prompt_only_when_none_in_conversation():
    recipe = RecipeSection(system_prompt="You are helpful.")
    plain = to_example(rec(question="q", answer="a"), "qa", recipe)
    assert plain.messages[0] == {"role": "system", "content": "You are helpful."}
    own = to_example(rec(messages=msgs(("system", "Mine."), ("user", "q"), ("assistant", "a"))), "messages", recipe)
    assert own.messages[0]["content"] == "Mine."
    assert roles(own) == ["system", "user", "assistant"]


def test_text_format():
    example = to_example(rec(body="  Some document.\n\n"), "text", RecipeSection(columns={"text": "body"}))
    assert (example.text, example.messages) == ("Some document.", None)


def test_transcript_format_uses_recipe_speakers_and_role_map():
    text = "preamble\n## me\nhow?\n## helper\nlike this\n## me\nthanks"
    recipe = RecipeSection(transcript=TranscriptSection(speakers={"user": ["## me"], "assistant": ["## helper"]}))
    example = to_example(rec(text=text, path="a.md"), "transcript", recipe)
    # The trailing user turn has nothing to learn after it: dropped and counted.
    assert example.messages == msgs(("user", "how?"), ("assistant", "like this"))
    assert example.extra == {"dropped_text_chars": len("preamble"), "dropped_trailing_user_turns": 1}


def test_transcript_without_speakers_stops_with_the_key():
    with pytest.raises(ForgeError, match="data.recipe.transcript.speakers"):
        to_example(rec(text="x"), "transcript", RecipeSection())


def test_unknown_format_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown data format 'csv'"):
        to_example(rec(text="x"), "csv", RecipeSection())


# ------------------------------------------------------------------------------------------ rejection reasons


@pytest.mark.parametrize(
    ("fmt", "fields", "recipe", "reason"),
    [
        (
            "qa",
            {"q": "x", "a": "y"},
            RecipeSection(columns={"user": "question", "assistant": "a"}),
            r"column 'question' \(user\) is missing; available columns: 'q', 'a'\. Set data.recipe.columns.user",
        ),
        (
            "qa",
            {"question": "x", "answer": "y"},
            RecipeSection(columns={"user": "question", "assistant": "answer", "label": "category"}),
            r"column 'category' \(label\) is missing",
        ),
        (
            "alpaca",
            {"instruction": "x", "output": "y"},
            RecipeSection(columns={"input": "context"}),
            r"column 'context' \(input\) is missing",
        ),
        ("messages", {"conversation": []}, RecipeSection(), r"column 'messages' \(messages\) is missing"),
        ("qa", {"question": "  ", "answer": "y"}, RecipeSection(), r"column 'question' \(user\) is empty"),
        ("qa", {"question": "x", "answer": None}, RecipeSection(), r"column 'answer' \(assistant\) is empty"),
        ("qa", {"question": "x", "answer": ["y"]}, RecipeSection(), r"column 'answer' \(assistant\) holds list"),
        ("text", {"text": ""}, RecipeSection(), r"column 'text' \(text\) is empty"),
        (
            "messages",
            {"messages": msgs(("user", "q"), ("assistant", " "))},
            RecipeSection(),
            r"turn 1 \(assistant\) is empty",
        ),
        ("messages", {"messages": msgs(("system", "s"), ("assistant", "a"))}, RecipeSection(), r"no user turn"),
        ("messages", {"messages": msgs(("user", "q"))}, RecipeSection(), r"no assistant turn"),
        (
            "messages",
            {"messages": msgs(("assistant", "hi"), ("user", "q"), ("assistant", "a"))},
            RecipeSection(),
            r"starts with an assistant turn",
        ),
        (
            "messages",
            {"messages": msgs(("user", "q"), ("system", "s"), ("assistant", "a"))},
            RecipeSection(),
            r"turn 1 is a system turn in the middle",
        ),
        (
            "messages",
            {"messages": [{"role": "user", "content": {"x": 1}}, {"role": "assistant", "content": "a"}]},
            RecipeSection(),
            r"turn 0 'content' is dict, not a string",
        ),
        (
            "messages",
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            RecipeSection(),
            r"turn 0 'content' is list, not a string",
        ),
        ("messages", {"messages": [{"content": "q"}]}, RecipeSection(), r"turn 0 of 'messages' has no 'role' key"),
        ("messages", {"messages": ["q", "a"]}, RecipeSection(), r"turn 0 of 'messages' is str, expected an object"),
        ("messages", {"messages": "not json"}, RecipeSection(), r"column 'messages' must be a list of turns, got str"),
        ("messages", {"messages": "[{broken"}, RecipeSection(), r"column 'messages' is a string but not valid JSON"),
        (
            "messages",
            {"messages": msgs(("narrator", "x"), ("user", "q"), ("assistant", "a"))},
            RecipeSection(),
            r"unknown role 'narrator'; add it to data.recipe.role_map, e.g. \{narrator: user\}",
        ),
        (
            "sharegpt",
            {"conversations": [{"from": "human", "value": 3}]},
            RecipeSection(),
            r"turn 0 'value' is int, not a string",
        ),
        (
            "alpaca",
            {"instruction": "x", "output": "y", "history": [["only one"]]},
            RecipeSection(),
            r"history\[0\] must be a pair \[user, assistant\]",
        ),
        (
            "alpaca",
            {"instruction": "x", "output": "y", "history": {"a": 1}},
            RecipeSection(),
            r"history must be a list of \[user, assistant\] pairs, got dict",
        ),
        (
            "alpaca",
            {"instruction": "x", "output": "y", "history": [["q", None]]},
            RecipeSection(),
            r"history\[0\] assistant text is NoneType",
        ),
        (
            "qa",
            {"question": "x", "answer": "y", "system": 5},
            RecipeSection(columns={"system": "system"}),
            r"system column 'system' holds int",
        ),
    ],
)
def test_rejection_reasons(fmt, fields, recipe, reason):
    with pytest.raises(RecipeError, match=reason):
        to_example(rec(**fields), fmt, recipe)


def test_trailing_user_turn_is_dropped_not_rejected():
    example = to_example(
        rec(messages=msgs(("user", "q"), ("assistant", "a"), ("user", "thanks!"))), "messages", RecipeSection()
    )
    assert roles(example) == ["user", "assistant"]
    assert example.extra["dropped_trailing_user_turns"] == 1


def test_dropping_every_assistant_turn_rejects():
    recipe = RecipeSection(role_map={"gpt": "drop"})
    conv = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    with pytest.raises(RecipeError, match="no assistant turn"):
        to_example(rec(conversations=conv), "sharegpt", recipe)
