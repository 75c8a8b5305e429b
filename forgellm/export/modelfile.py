"""The Ollama Modelfile of an export: FROM the GGUF, the chat TEMPLATE, stop strings, SYSTEM and num_ctx.

Ollama's Modelfile parser has no escapes. A value is the text between its first and last quote; it ends
at the first line break after which the text so far, trimmed, is a complete quoted value; characters
that are not printable (other than tab and line breaks) are dropped. ``modelfile_value`` quotes a text
so that the parser reads back exactly that text, or says that no quoting can.
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING

from forgellm.errors import ErrorCode, ForgeError

if TYPE_CHECKING:
    from forgellm.templates.messages import ChatFormat

_TRIM = " \t\r\n"  # the only whitespace left once unprintable characters are refused


def _survives_parser(text: str) -> bool:
    """True when the parser keeps every character (it drops control, format and non-ASCII space characters)."""
    return all(ch in "\t\r\n" or ch == " " or unicodedata.category(ch)[0] not in "CZ" for ch in text)


def modelfile_value(text: str) -> str | None:
    """``text`` quoted for a Modelfile command so that Ollama reads back exactly ``text``; None if impossible."""
    if not _survives_parser(text):
        return None
    single = f'"{text}"'
    if "\n" not in text and "\r" not in text and not single.startswith('"""'):
        return single
    triple = f'"""{text}"""'
    for i, ch in enumerate(text):
        if ch in "\r\n":
            so_far = ('"""' + text[:i]).rstrip(_TRIM)
            if len(so_far) >= 6 and so_far.endswith('"""'):
                return None  # a line ending in """ would end the value there
    return triple


def stop_strings(chat_format: ChatFormat) -> list[str]:
    """Every string Ollama should stop at: the format's stop strings and its end-of-turn/EOS markers."""
    stops = [*chat_format.stop_strings, *chat_format.stop_markers]
    return list(dict.fromkeys(s for s in stops if s))


def _unwritable(what: str, text: str) -> ForgeError:
    return ForgeError(
        f"The {what} {text!r:.80} cannot be written into a Modelfile: Ollama's Modelfile parser would change it "
        '(it drops invisible control characters, and a line ending in """ ends a value early).',
        fix=f"Remove control characters and lines ending in three double quotes from the {what}.",
        code=ErrorCode.EXPORT_UNSUPPORTED,
    )


def build_modelfile(gguf_file: str, chat_format: ChatFormat, *, num_ctx: int, system_prompt: str | None = None) -> str:
    """The Modelfile text for ``ollama create NAME -f Modelfile`` next to ``gguf_file``.

    system_prompt: the SYSTEM of the model (None = the chat format's own system prompt, "" = none).
    A JinjaChatFormat raises ForgeError (see ``to_ollama_template``).
    """
    from forgellm.templates import to_ollama_template

    template = to_ollama_template(chat_format)
    template_value = modelfile_value(template)
    assert template_value is not None, "generated templates hold only printable characters"
    source = f"./{gguf_file}"
    # Written unquoted, as Ollama writes FROM: an unquoted value runs to the end of its line, trimmed.
    if source != source.strip() or not _survives_parser(source) or "\n" in source or "\r" in source:
        raise _unwritable("GGUF file name", gguf_file)
    lines = [
        "# Ollama Modelfile written by Forge. Create the model with: ollama create NAME -f Modelfile",
        f"FROM {source}",
        f"TEMPLATE {template_value}",
    ]
    for stop in stop_strings(chat_format):
        value = modelfile_value(stop)
        if value is None:
            raise _unwritable("stop string", stop)
        lines.append(f"PARAMETER stop {value}")
    lines.append(f"PARAMETER num_ctx {int(num_ctx)}")
    system = chat_format.system_prompt if system_prompt is None else system_prompt
    if system:
        value = modelfile_value(system)
        if value is not None:
            lines.append(f"SYSTEM {value}")
        elif system == chat_format.system_prompt:
            # The TEMPLATE carries this prompt exactly (as escapes), so leaving SYSTEM out changes nothing.
            lines.append("# SYSTEM omitted: Modelfile quoting cannot hold this prompt; the TEMPLATE has it built in.")
        else:
            raise _unwritable("system prompt", system)
    return "\n".join(lines) + "\n"
