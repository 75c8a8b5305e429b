"""Generate an Ollama template (Go ``text/template`` over ``.Messages``) from a builtin chat-template definition.

Like ``hf_jinja.py``, the template is assembled from the family's ``TemplateSpec`` data and the chat
format's resolved parameters (BOS/EOS text, role names, default system prompt), so Ollama renders a
conversation exactly as ``render_text`` did during training. Differences that Ollama needs:

- A leading BOS is left out: llama.cpp prepends the BOS token itself when the GGUF says add_bos_token.
  A BOS anywhere else (Llama 2 opens every user turn with one) stays literal text.
- When the last message is the assistant's, its turn is left open (no end-of-turn), so Ollama can
  continue it; otherwise the template ends with the generation prompt.
- Ollama passes a Modelfile SYSTEM (or a client's system message) as the first message, role "system".

Every literal is a Go string constant (``{{ "..." }}``), never raw template text: message-like text
such as ``{{`` or a trim marker cannot change the template, and characters that Ollama's Modelfile
parser would drop (control and format characters) travel as escapes. Only Go's builtin template
functions are used (eq, ne, len, index, slice, print), so any Go renderer can execute it.
"""

from __future__ import annotations

import re
import unicodedata

from forgellm.errors import ErrorCode, ForgeError

from .families import BUILTIN_NAMES
from .jinja_format import JinjaChatFormat
from .messages import ChatFormat
from .render import BuiltinChatFormat

_TOKEN = re.compile(r"\{(role|content|bos|eos|system|user)\}")
_GO_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def go_string(text: str) -> str:
    """A Go interpreted string literal for ``text`` whose characters are all printable (or escaped)."""
    out: list[str] = []
    for ch in text:
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch == " " or unicodedata.category(ch)[0] not in "CZ":  # what Go calls printable
            out.append(ch)
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


class _Writer:
    """Turns spec format strings into Go template actions for one chat format."""

    def __init__(self, chat_format: BuiltinChatFormat) -> None:
        self.fmt = chat_format
        spec = chat_format.spec
        turns = (spec.user_format, spec.system_format or "", spec.assistant_prefix)
        # Only a turn that may open the output needs to know whether anything was written before it.
        self.track_start = bool(chat_format.bos_text) and any(t.startswith("{bos}") for t in turns)

    def pieces(self, fmt: str, exprs: dict[str, str], role: str = "") -> list[tuple[str, str]]:
        """``fmt`` as ("lit", text) / ("expr", go) / ("bos", text) pieces; placeholders read in one pass."""
        literal = {"eos": self.fmt.eos_text, "bos": self.fmt.bos_text}
        if role:
            literal["role"] = self.fmt.role_names[role]
        pieces: list[tuple[str, str]] = []
        pos = 0
        for m in _TOKEN.finditer(fmt):
            pieces.append(("lit", fmt[pos : m.start()]))
            name = m.group(1)
            if name == "bos" and m.start() == 0 and self.track_start:
                pieces.append(("bos", self.fmt.bos_text))
            elif name in exprs:
                pieces.append(("expr", exprs[name]))
            else:
                pieces.append(("lit", literal.get(name, m.group(0))))
            pos = m.end()
        pieces.append(("lit", fmt[pos:]))
        return [(kind, value) for kind, value in pieces if value or kind == "expr"]

    def actions(self, pieces: list[tuple[str, str]]) -> str:
        """Go actions that print the pieces, adjacent literals joined into one constant."""
        out: list[str] = []
        pending = ""
        for kind, value in pieces:
            if kind == "lit":
                pending += value
                continue
            if pending:
                out.append("{{ " + go_string(pending) + " }}")
                pending = ""
            if kind == "bos":
                out.append("{{ if $started }}{{ " + go_string(value) + " }}{{ end }}")
            else:
                out.append("{{ " + value + " }}")
        if pending:
            out.append("{{ " + go_string(pending) + " }}")
        return "".join(out)

    def turn(self, pieces: list[tuple[str, str]]) -> str:
        """Actions for a whole turn; records that output has started when the turn printed anything."""
        text = self.actions(pieces)
        if not self.track_start or not pieces:
            return text
        if any(kind == "lit" for kind, _ in pieces):
            return text + "{{ $started = true }}"
        printed = [value for kind, value in pieces if kind == "expr"]
        return text + "".join("{{ if " + p + " }}{{ $started = true }}{{ end }}" for p in printed)


def _line(actions: str) -> str:
    """One template line: its first action trims the formatting newline before it."""
    return "{{-" + actions.removeprefix("{{") if actions else ""


def _fold_expr(fold_format: str) -> str:
    """The folded first user message as one Go expression (``print`` concatenates strings as they are)."""
    args: list[str] = []
    pos = 0
    for m in _TOKEN.finditer(fold_format):
        if m.start() > pos:
            args.append(go_string(fold_format[pos : m.start()]))
        args.append({"system": "$system", "user": ".Content"}.get(m.group(1), go_string(m.group(0))))
        pos = m.end()
    if pos < len(fold_format):
        args.append(go_string(fold_format[pos:]))
    return "print " + " ".join(args) if args else '""'


def _check_exportable(chat_format: ChatFormat) -> BuiltinChatFormat:
    if isinstance(chat_format, JinjaChatFormat):
        raise ForgeError(
            f"The '{chat_format.name}' chat template is a Jinja template that matches none of Forge's builtin "
            "templates, and Ollama needs a Go template: Forge cannot translate it, so no Modelfile was written.",
            fix=f"Train with a builtin template (model.chat_template.name in forge.yaml: {', '.join(BUILTIN_NAMES)}) "
            "to run the model in Ollama, or use the GGUF with llama.cpp, which reads the Jinja template inside it.",
            code=ErrorCode.EXPORT_UNSUPPORTED,
        )
    if not isinstance(chat_format, BuiltinChatFormat):
        raise TypeError(f"cannot export {type(chat_format).__name__} as an Ollama template")
    return chat_format


def to_ollama_template(chat_format: ChatFormat) -> str:
    """The Ollama TEMPLATE equivalent to ``chat_format.render_text`` (leading BOS left to llama.cpp)."""
    chat_format = _check_exportable(chat_format)
    spec = chat_format.spec
    w = _Writer(chat_format)
    fold = spec.system_handling == "fold_into_first_user"
    assert fold or spec.system_format is not None, "native system handling needs a system_format"
    has_default = chat_format.system_prompt is not None
    lines = [
        "{{- /* Generated by Forge from the builtin '" + spec.name + "' chat template. */ -}}",
        "{{- $system := " + go_string(chat_format.system_prompt or "") + " }}",
        "{{- $hasSystem := " + ("true" if has_default else "false") + " }}",
        "{{- $messages := .Messages }}",
        '{{- if $messages }}{{ if eq (index $messages 0).Role "system" }}',
        "{{- $system = (index $messages 0).Content }}{{ $hasSystem = true }}{{ $messages = slice $messages 1 }}",
        "{{- end }}{{ end }}",
    ]
    if w.track_start:
        lines.append("{{- $started := false }}")
    # The leading BOS is llama.cpp's to add; anything after it opens the conversation as usual.
    lines.append(_line(w.turn(w.pieces(spec.conversation_prefix.removeprefix("{bos}"), {}))))
    if not fold:
        lines.append(
            "{{- if $hasSystem }}"
            + w.turn(w.pieces(spec.system_format or "", {"content": "$system"}, "system"))
            + "{{ end }}"
        )
    lines += ['{{- $lastRole := "" }}', "{{- range $i, $message := $messages }}", '{{- if eq .Role "user" }}']
    if fold:
        fold_expr = _fold_expr(spec.fold_format)
        lines += [
            "{{- $content := .Content }}",
            "{{- if $hasSystem }}{{ $content = " + fold_expr + " }}{{ $hasSystem = false }}{{ end }}",
        ]
    user = w.pieces(spec.user_format, {"content": "$content" if fold else ".Content"}, "user")
    assistant = [*w.pieces(spec.assistant_prefix, {}, "assistant"), ("expr", ".Content")]
    end_of_turn = w.turn(w.pieces(spec.end_of_turn + spec.separator, {}))
    lines += [
        _line(w.turn(user)),
        '{{- else if eq .Role "assistant" }}' + w.turn(assistant),
        # The last assistant turn stays open, so that Ollama continues it.
        "{{- if ne (len (slice $messages $i)) 1 }}" + end_of_turn + "{{ end }}",
        '{{- else if eq .Role "system" }}',
    ]
    if fold:  # a later system message waits for the next user turn, like the first one
        lines.append("{{- $system = .Content }}{{ $hasSystem = true }}")
    else:  # a later system message is a system turn of its own
        lines.append(_line(w.turn(w.pieces(spec.system_format or "", {"content": ".Content"}, "system"))))
    lines += ["{{- end }}", "{{- $lastRole = .Role }}", "{{- end }}"]
    generation = spec.assistant_prefix if spec.generation_prompt is None else spec.generation_prompt
    prompt = w.actions(w.pieces(generation, {}, "assistant"))
    if prompt:
        lines.append('{{- if ne $lastRole "assistant" }}' + prompt + "{{ end }}")
    return "\n".join(line for line in lines if line)
