"""The Modelfile: its commands, and that Ollama's own Modelfile grammar reads every value back exactly."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from templates_support import make_tokenizer

from forgellm.errors import ForgeError
from forgellm.export.modelfile import build_modelfile, modelfile_value, stop_strings
from forgellm.templates import BUILTIN_NAMES, build_chat_format, to_ollama_template

# --- a port of Ollama's Modelfile parser (parser/parser.go, ParseFile): a rune-by-rune state machine ----

_COMMANDS = (
    "from",
    "license",
    "template",
    "system",
    "adapter",
    "draft",
    "renderer",
    "parser",
    "parameter",
    "message",
    "requires",
)


def _is_print(ch: str) -> bool:  # Go's strconv.IsPrint
    return ch == " " or unicodedata.category(ch)[0] in "LMNPS"


def _unquote(s: str) -> tuple[str, bool]:
    if s.startswith('"""'):
        return (s[3:-3], True) if len(s) >= 6 and s.endswith('"""') else ("", False)
    if s.startswith('"'):
        return (s[1:-1], True) if len(s) >= 2 and s.endswith('"') else ("", False)
    return s, True


def _next_state(ch: str, state: str) -> tuple[str, str]:
    space, newline = ch in " \t", ch in "\r\n"
    if state == "nil":
        return ("comment", "") if ch == "#" else ("nil", "") if space or newline else ("name", ch)
    if state == "name":
        if ch.isascii() and ch.isalpha():
            return "name", ch
        if space:
            return "value", ""
        raise ValueError("invalid command")
    if state == "value":
        return ("nil", ch) if space or newline else ("value", ch)
    if state == "parameter":
        if ch.isascii() and (ch.isalnum() or ch == "_"):
            return "parameter", ch
        if space:
            return "value", ""
        raise ValueError("unexpected EOF")
    return ("nil", "") if newline else ("comment", "")


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(command, value) pairs exactly as Ollama reads them; PARAMETER gives (parameter name, value)."""
    commands: list[tuple[str, str]] = []
    state, buf, name = "nil", "", ""
    for ch in text:
        nxt, r = _next_state(ch, state)
        if nxt != state:
            if state == "name":
                word = buf.lower()
                if word not in _COMMANDS:
                    raise ValueError(f"invalid command {buf!r}")
                if word == "parameter":
                    nxt = "parameter"
                name = "model" if word == "from" else word
            elif state == "parameter":
                name = buf
            elif state == "value":
                value, ok = _unquote(buf.strip(" \t\r\n"))
                if not ok or r in (" ", "\t"):
                    buf += r
                    continue
                commands.append((name, value))
            buf, state = "", nxt
        if r and _is_print(r):
            buf += r
    if state == "value":
        value, ok = _unquote(buf.strip(" \t\r\n"))
        if not ok:
            raise ValueError("unexpected EOF")
        commands.append((name, value))
    elif state not in ("nil", "comment"):
        raise ValueError("unexpected EOF")
    return commands


# --- the Modelfile Forge writes ------------------------------------------------------------------------


def _values(commands, name):
    return [value for command, value in commands if command == name]


@pytest.mark.parametrize("family", BUILTIN_NAMES)
def test_modelfile_reads_back_exactly(family):
    fmt = build_chat_format(family)
    text = build_modelfile(f"{family}-q8_0.gguf", fmt, num_ctx=4096, system_prompt="Be brief.\nVery brief.")
    commands = parse_modelfile(text)
    assert _values(commands, "model") == [f"./{family}-q8_0.gguf"]
    assert _values(commands, "template") == [to_ollama_template(fmt)]
    assert _values(commands, "stop") == stop_strings(fmt)
    assert _values(commands, "num_ctx") == ["4096"]
    assert _values(commands, "system") == ["Be brief.\nVery brief."]


@pytest.mark.parametrize("family", BUILTIN_NAMES)
def test_every_stop_string_and_end_of_turn_marker(family):
    fmt = build_chat_format(family)
    stops = _values(parse_modelfile(build_modelfile("m.gguf", fmt, num_ctx=2048)), "stop")
    assert set(fmt.stop_strings) <= set(stops) and set(fmt.stop_markers) <= set(stops)
    assert len(stops) == len(set(stops))


def test_chatml_modelfile_lines():
    text = build_modelfile("my-model-q8_0.gguf", build_chat_format("chatml"), num_ctx=2048)
    lines = text.splitlines()
    assert "FROM ./my-model-q8_0.gguf" in lines
    assert 'PARAMETER stop "<|im_end|>"' in lines
    assert "PARAMETER num_ctx 2048" in lines
    assert any(line.startswith('TEMPLATE """{{-') for line in lines)
    assert not any(line.startswith("SYSTEM") for line in lines)  # chatml has no system prompt of its own
    assert text.endswith("\n")


def test_alpaca_stops_at_the_next_instruction():
    stops = _values(parse_modelfile(build_modelfile("m.gguf", build_chat_format("alpaca"), num_ctx=512)), "stop")
    assert stops == ["</s>", "### Instruction:"]


def test_system_comes_from_the_chat_format_unless_given():
    fmt = build_chat_format("alpaca")  # alpaca's default system prompt
    assert _values(parse_modelfile(build_modelfile("m.gguf", fmt, num_ctx=512)), "system") == [fmt.system_prompt]
    given_prompt = build_modelfile("m.gguf", fmt, num_ctx=512, system_prompt="Only this.")
    assert _values(parse_modelfile(given_prompt), "system") == ["Only this."]
    assert _values(parse_modelfile(build_modelfile("m.gguf", fmt, num_ctx=512, system_prompt="")), "system") == []


def test_stop_strings_of_a_real_tokenizer():
    tok = make_tokenizer(bos="<s>", eos="<|endoftext|>")
    fmt = build_chat_format("chatml", tok)
    stops = _values(parse_modelfile(build_modelfile("m.gguf", fmt, num_ctx=2048)), "stop")
    assert stops == ["<|im_end|>", "<|endoftext|>"]


def test_awkward_system_prompt_reads_back():
    prompt = 'He said """hi"""!\n"quoted" line\n  indented """ middle\nends with a quote"'
    fmt = build_chat_format("chatml")
    text = build_modelfile("m.gguf", fmt, num_ctx=2048, system_prompt=prompt)
    assert _values(parse_modelfile(text), "system") == [prompt]


def test_unwritable_default_system_prompt_lives_in_the_template_only():
    prompt = 'first line ends in """\nsecond'
    fmt = build_chat_format("chatml", system_prompt=prompt)
    text = build_modelfile("m.gguf", fmt, num_ctx=2048)
    commands = parse_modelfile(text)
    assert _values(commands, "system") == []
    assert _values(commands, "template") == [to_ollama_template(fmt)]
    assert "SYSTEM omitted" in text


def test_unwritable_other_system_prompt_is_an_error():
    with pytest.raises(ForgeError) as info:
        build_modelfile("m.gguf", build_chat_format("chatml"), num_ctx=2048, system_prompt="bell \x07 rings")
    assert "system prompt" in info.value.message and info.value.fix


def test_jinja_chat_format_has_no_modelfile():
    template = "{% for m in messages %}<<{{ m['content'] }}>>{% endfor %}"
    fmt = build_chat_format("custom", make_tokenizer(), jinja_template=template)
    with pytest.raises(ForgeError):
        build_modelfile("m.gguf", fmt, num_ctx=2048)


# --- quoting of single values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "a",
        "",
        '"',
        '""',
        '"""',
        'x"""',
        '"""x',
        "  spaced  ",
        "tab\tin",
        "é 😀 中文",
        "two\nlines",
        '"a"b"',
        'line\n"""',
        "\r\nwindows\r\n",
        "ends with newline\n",
        "# not a comment",
    ],
)
def test_value_reads_back(text):
    value = modelfile_value(text)
    assert value is not None
    assert parse_modelfile(f"SYSTEM {value}\n") == [("system", text)]
    assert parse_modelfile(f"PARAMETER stop {value}") == [("stop", text)]  # also at the end of the file


@pytest.mark.parametrize("text", ['a """\nb', 'x"""   \ny', '"""\n"""', "bell \x07", "nbsp\u00a0", "zero\u200bwidth"])
def test_value_that_ollama_cannot_read_back(text):
    assert modelfile_value(text) is None


def _reads_back(modelfile: str, text: str) -> bool:
    try:
        return parse_modelfile(modelfile) == [("system", text)]
    except ValueError:  # Ollama would refuse the Modelfile
        return False


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(['"', "a", " ", "\n", "\t", "\r", "é", "\x07", "#"]), max_size=14))
def test_value_round_trip_or_refusal(text):
    value = modelfile_value(text)
    if value is None:  # refused only when Ollama would really change the text
        assert not any(_reads_back(f"SYSTEM {q}\n", text) for q in (f'"{text}"', f'"""{text}"""'))
    else:
        assert parse_modelfile(f"SYSTEM {value}\nPARAMETER num_ctx 1\n") == [("system", text), ("num_ctx", "1")]
