"""The Ollama TEMPLATE, executed by Go's real text/template, renders exactly what training rendered.

How the comparison is made honest:

- Go runs the template the way Ollama does (tests/export/gotemplate/main.go: missingkey=zero, messages of
  one role collated, a map with System/Messages/Response), over messages passed as JSON with Ollama's
  field names. Nothing of the template is interpreted in Python.
- The template leaves out the leading BOS because llama.cpp prepends it as a token when the GGUF says
  add_bos_token (set from ``chat_format.bos_text``). So the Go output, with ``bos_text`` put in front
  when the chat format adds one, must equal ``render_text`` byte for byte.
- Generation prompt: the conversation up to its last user turn; Go's output (+ BOS) must equal
  ``render_text(prompt, add_generation_prompt=True)``.
- Full conversation: Ollama leaves a final assistant turn open so the model can continue it, so Go's
  output ends with the answer itself. Appending the family's end-of-turn text (and its separator where
  ``render`` writes one after the last turn) must give ``render_text(full)``; and the appended text is
  exactly the end of the last trained span plus the untrained separator, so nothing is hidden in it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from templates_support import family_tokenizer, make_tokenizer

from forgellm.errors import ForgeError
from forgellm.templates import BUILTIN_NAMES, build_chat_format, to_ollama_template
from forgellm.templates.render import fill

GO_SOURCE = Path(__file__).parent / "gotemplate" / "main.go"

SYSTEM = {"role": "system", "content": "Be brief."}
CONVERSATION = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Why?"},
    {"role": "assistant", "content": "Because."},
]
AWKWARD = [
    "{{ .Content }}",
    "}} {{- end }} {{/* x */}}",
    'say "hi" and """triple"""',
    "`backticks` and 'single'",
    "line one\nline two\n\n",
    "\r\nwindows\r\n",
    "  padded  ",
    "tab\there",
    "é 😀 中文 \u200b zero-width",
    "\\ backslash \\n not a newline",
    "{content} {role} {bos} {system}",
    "",
]


class GoTemplate:
    """A compiled copy of gotemplate/main.go; renders many (template, messages) cases in one process."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def render_many(self, cases: list[tuple[str, list[dict[str, str]]]]) -> list[str]:
        payload = [
            {"template": t, "messages": [{"Role": m["role"], "Content": m["content"]} for m in msgs]}
            for t, msgs in cases
        ]
        done = subprocess.run(
            [str(self.binary), "-batch"], input=json.dumps(payload), capture_output=True, text=True, check=True
        )
        results = json.loads(done.stdout)
        errors = [r["error"] for r in results if r.get("error")]
        assert not errors, errors
        return [r["output"] for r in results]

    def render(self, template: str, messages: list[dict[str, str]]) -> str:
        return self.render_many([(template, messages)])[0]


@pytest.fixture(scope="module")
def go_template(tmp_path_factory) -> GoTemplate:
    go = shutil.which("go")
    if go is None:
        pytest.skip("Go is not installed (CI installs golang-go)")
    work = tmp_path_factory.mktemp("gotemplate")
    env = {
        **os.environ,
        "GOCACHE": str(work / "cache"),
        "GOPATH": str(work / "gopath"),
        "GOFLAGS": "",
        "GOPROXY": "off",  # the program needs the standard library only
        "GOTOOLCHAIN": "local",
    }
    binary = work / "gotemplate"
    subprocess.run([go, "build", "-o", str(binary), str(GO_SOURCE)], cwd=work, env=env, check=True, timeout=300)
    return GoTemplate(binary)


@cache
def _tokenizer(family: str):
    return family_tokenizer(family)


def _format(family: str, with_tokenizer: bool, **kwargs):
    return build_chat_format(family, _tokenizer(family) if with_tokenizer else None, **kwargs)


def _closing(fmt) -> str:
    """What render_text writes after the last assistant answer: end-of-turn (+ separator where it does)."""
    values = {"bos": fmt.bos_text, "eos": fmt.eos_text}
    spec = fmt.spec
    return fill(spec.end_of_turn, values) + (fill(spec.separator, values) if spec.separator_after_last else "")


def _check_round_trip(go_template: GoTemplate, fmt, conversation: list[dict[str, str]]) -> None:
    template = to_ollama_template(fmt)
    prompt = conversation[:-1]
    assert prompt[-1]["role"] == "user" and conversation[-1]["role"] == "assistant"
    go_prompt, go_full = go_template.render_many([(template, prompt), (template, conversation)])
    # Generation prompt.
    assert fmt.bos_text + go_prompt == fmt.render_text(prompt, add_generation_prompt=True)
    # Full conversation: the open last turn ends with the answer; training closed it with the trained
    # end-of-turn (the end of the last trained span) and the untrained separator.
    answer = conversation[-1]["content"]
    assert go_full.endswith(answer)
    rendered = fmt.render(conversation)
    assert fmt.bos_text + go_full + _closing(fmt) == rendered.text
    end_of_turn = fill(fmt.spec.end_of_turn, {"bos": fmt.bos_text, "eos": fmt.eos_text})
    opened = len(fmt.bos_text + go_full)
    assert rendered.trained_spans[-1][1] == opened + len(end_of_turn)


@pytest.mark.parametrize("with_tokenizer", [False, True], ids=["defaults", "tokenizer"])
@pytest.mark.parametrize("system", ["none", "message", "configured"])
@pytest.mark.parametrize("family", BUILTIN_NAMES)
def test_round_trip(go_template, family, system, with_tokenizer):
    """Two turns: without a system prompt (alpaca's default one then applies), with a system message
    (what Ollama sends for a Modelfile SYSTEM), and with a configured prompt baked into the template."""
    kwargs = {"system_prompt": "You are Forge, a careful assistant."} if system == "configured" else {}
    fmt = _format(family, with_tokenizer, **kwargs)
    messages = [SYSTEM, *CONVERSATION] if system == "message" else list(CONVERSATION)
    _check_round_trip(go_template, fmt, messages)


@pytest.mark.parametrize("with_tokenizer", [False, True], ids=["defaults", "tokenizer"])
@pytest.mark.parametrize("family", BUILTIN_NAMES)
def test_round_trip_custom_role_names(go_template, family, with_tokenizer):
    """Role names are baked in (families without role text in their markers simply ignore them)."""
    names = {"system": "Regeln", "user": "Kunde", "assistant": "Berater"}
    fmt = _format(family, with_tokenizer, role_names=names)
    _check_round_trip(go_template, fmt, [SYSTEM, *CONVERSATION])
    _check_round_trip(go_template, fmt, list(CONVERSATION))


@pytest.mark.parametrize("family", BUILTIN_NAMES)
def test_awkward_message_text_is_printed_verbatim(go_template, family):
    """Template syntax, quotes, backticks, line breaks and unicode inside messages are data, never code."""
    fmt = _format(family, False)
    template = to_ollama_template(fmt)
    cases, expected = [], []
    for i, text in enumerate(AWKWARD):
        other = AWKWARD[(i + 1) % len(AWKWARD)]
        conversation = [
            {"role": "system", "content": other},
            {"role": "user", "content": text},
            {"role": "assistant", "content": other},
            {"role": "user", "content": text + other},
        ]
        cases.append((template, conversation))
        expected.append(fmt.render_text(conversation, add_generation_prompt=True))
    outputs = go_template.render_many(cases)
    assert [fmt.bos_text + out for out in outputs] == expected


@pytest.mark.parametrize("family", BUILTIN_NAMES)
def test_awkward_parameters_are_baked_in_verbatim(go_template, family):
    """A system prompt and role names holding template syntax and quotes become Go string constants."""
    awkward = '{{ end }} "quoted" `tick` """ \\ \x07 \u00a0 end\n'
    names = {"system": "s{{", "user": 'u"}}', "assistant": "a`\\n`"}
    fmt = _format(family, False, system_prompt=awkward, role_names=names)
    _check_round_trip(go_template, fmt, list(CONVERSATION))


TEXT = st.lists(
    st.one_of(st.text(max_size=10), st.sampled_from(["{{", "}}", "{{-", "-}}", '"""', "`", "\n", "\r\n", "😀", " "])),
    max_size=4,
).map("".join)


@st.composite
def conversations(draw):
    msgs = [{"role": "system", "content": draw(TEXT)}] if draw(st.booleans()) else []
    # Turns alternate, user first (folding families need that): Ollama merges consecutive turns of one role.
    turns = draw(st.integers(min_value=1, max_value=5))
    return msgs + [{"role": ("user", "assistant")[i % 2], "content": draw(TEXT)} for i in range(turns)]


@pytest.mark.parametrize("family", BUILTIN_NAMES)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(conversations(), min_size=1, max_size=12))
def test_any_conversation_round_trips(go_template, family, batch):
    """Any conversation: ending with a user turn -> the generation prompt; with an assistant turn -> the
    open turn, which the end-of-turn (+ separator) closes into the training text."""
    fmt = _format(family, False)
    forbidden = [t for t in fmt.forbidden if t]
    assume(not any(marker in m["content"] for msgs in batch for m in msgs for marker in forbidden))
    template = to_ollama_template(fmt)
    outputs = go_template.render_many([(template, msgs) for msgs in batch])
    for msgs, out in zip(batch, outputs, strict=True):
        if msgs[-1]["role"] == "assistant":
            assert fmt.bos_text + out + _closing(fmt) == fmt.render_text(msgs)
        else:
            assert fmt.bos_text + out == fmt.render_text(msgs, add_generation_prompt=True)


@pytest.mark.parametrize("family", BUILTIN_NAMES)
def test_later_system_message_is_kept(go_template, family):
    """Ollama lets a client send a system message mid-conversation; it is rendered, never dropped."""
    fmt = _format(family, False)
    messages = [*CONVERSATION[:2], {"role": "system", "content": "Now answer in French."}, CONVERSATION[2]]
    assert "Now answer in French." in go_template.render(to_ollama_template(fmt), messages)


def test_llama2_keeps_the_bos_of_later_user_turns(go_template):
    """Llama 2 opens every user turn with BOS: only the first (llama.cpp's token) is left out."""
    fmt = _format("llama2", False)
    out = go_template.render(to_ollama_template(fmt), list(CONVERSATION))
    assert not out.startswith("<s>")
    assert out.count("<s>") == 1 and "</s><s>[INST] Why?" in out


def test_no_bos_in_template_when_the_format_adds_none(go_template):
    fmt = _format("llama3", False, add_bos=False)
    assert fmt.bos_text == ""
    _check_round_trip(go_template, fmt, list(CONVERSATION))
    assert "<|begin_of_text|>" not in to_ollama_template(fmt)


def test_template_stands_in_for_tokenizer_template():
    """A builtin that stands for the tokenizer's Jinja template exports the builtin's Go template."""
    fmt = _format("chatml", False)
    stand_in = replace(fmt, label="tokenizer", source_template="{{ messages }}")
    assert to_ollama_template(stand_in) == to_ollama_template(fmt)


def test_jinja_template_is_refused_with_a_fix():
    template = "{% for m in messages %}<<{{ m['role'] }}>>{{ m['content'] }}{% endfor %}"
    fmt = build_chat_format("custom", make_tokenizer(), jinja_template=template)
    with pytest.raises(ForgeError) as info:
        to_ollama_template(fmt)
    assert "Jinja" in info.value.message and "custom" in info.value.message
    assert "builtin" in info.value.fix and "chatml" in info.value.fix


def test_template_uses_only_quoted_literals():
    """Every printed literal is a Go string constant: no raw text outside actions but formatting newlines."""
    import re

    for family in BUILTIN_NAMES:
        template = to_ollama_template(_format(family, False, system_prompt="x\ny"))
        outside = re.sub(r"\{\{.*?\}\}", "", template.replace("\n", ""))
        assert outside == "", family
        assert "\n" not in template.split("}}")[-1]
