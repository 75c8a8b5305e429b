"""Recognise a Jinja chat template that renders exactly like a builtin family.

Rendering a builtin is plain string assembly with exact trained spans; a Jinja template costs a
template render per prefix. When the tokenizer's template gives the same text as a builtin family on
probe conversations (system or not, multi-turn, whitespace at the edges, generation prompt), Forge
uses the builtin, under the name of the template it stands for.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .families import FAMILIES
from .jinja_format import JinjaChatFormat
from .render import BuiltinChatFormat

_MARK = "\x00SYSTEM\x00"
PROBES: tuple[tuple[list[dict[str, str]], bool], ...] = (
    ([{"role": "user", "content": "Hi"}], True),
    (
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
        ],
        False,
    ),
    (
        [
            {"role": "user", "content": " padded \n"},
            {"role": "assistant", "content": "\n two\nlines "},
            {"role": "user", "content": "second?"},
            {"role": "assistant", "content": "2"},
        ],
        False,
    ),
    (
        [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "q2"},
        ],
        True,
    ),
)


def _default_system(jinja: JinjaChatFormat, builtin: BuiltinChatFormat) -> str | None:
    """The system prompt the Jinja template adds on its own (e.g. SmolLM's), read off a render."""
    if builtin.spec.system_format is None:
        return None
    probe = [{"role": "user", "content": "Hi"}]
    shape = replace(builtin, system_prompt=_MARK).render_text(probe)
    pattern = re.escape(shape).replace(re.escape(_MARK), "(.*?)")
    try:
        found = re.fullmatch(pattern, jinja.render_text(probe), flags=re.DOTALL)
    except Exception:  # a template that refuses the probe is left to the Jinja path
        return None
    return found.group(1) if found else None


def _same(jinja: JinjaChatFormat, builtin: BuiltinChatFormat) -> bool:
    try:
        return all(jinja.render_text(m, g) == builtin.render_text(m, g) for m, g in PROBES)
    except Exception:  # a probe the template refuses: not provably equivalent
        return False


def equivalent_builtin(jinja: JinjaChatFormat, candidates: dict[str, BuiltinChatFormat]) -> BuiltinChatFormat | None:
    """The builtin (with the template's default system prompt, if any) that renders like `jinja`."""
    for builtin in candidates.values():
        if jinja.system_prompt is not None:
            options = [replace(builtin, system_prompt=jinja.system_prompt)]
        else:
            options = [replace(builtin, system_prompt=None)]
            default = _default_system(jinja, builtin)
            if default is not None:
                options.append(replace(builtin, system_prompt=default))
        for option in options:
            if _same(jinja, option):
                return replace(option, label=jinja.name, source_template=jinja.template)
    return None


def family_candidates(tokenizer: Any, build: Callable[[str, Any], BuiltinChatFormat]) -> dict[str, BuiltinChatFormat]:
    """Every builtin family that fits this tokenizer, built with it (others are skipped)."""
    found = {}
    for name in FAMILIES:
        try:
            found[name] = build(name, tokenizer)
        except Exception:  # the family's markers are not in this vocabulary
            continue
    return found
