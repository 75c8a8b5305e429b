"""The entry point: a template name plus parameters (and usually a tokenizer) -> a ChatFormat."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from forgellm.errors import ErrorCode, ForgeError

from .detect import detect_template, fitting_templates, missing_tokens, tokenizer_chat_template
from .equivalence import equivalent_builtin, family_candidates
from .families import BUILTIN_NAMES, CANONICAL_ROLES, FAMILIES, TemplateSpec
from .jinja_format import JinjaChatFormat
from .messages import ChatFormat
from .render import BuiltinChatFormat

TEMPLATE_NAMES = (*BUILTIN_NAMES, "custom", "tokenizer", "auto")


def _tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts a BOS in front of plain text by itself (as in pre-training)."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if tokenizer is None or bos_id is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos_id


def _role_names(spec: TemplateSpec, role_names: Mapping[str, str] | None) -> dict[str, str]:
    names = dict(spec.role_names)
    for role, display in (role_names or {}).items():
        if role not in CANONICAL_ROLES:
            raise ForgeError(
                f"Unknown role {role!r} in role_names.",
                fix=f"Rename only the canonical roles: {', '.join(CANONICAL_ROLES)}.",
                code=ErrorCode.TEMPLATE_INVALID,
            )
        if not isinstance(display, str) or not display:
            raise ForgeError(
                f"The display name for role {role!r} must be non-empty text.",
                fix="Set a name.",
                code=ErrorCode.TEMPLATE_INVALID,
            )
        names[role] = display
    return names


def _control_tokens(tokenizer: Any, *extra: str) -> tuple[str, ...]:
    specials = list(getattr(tokenizer, "all_special_tokens", []) or []) if tokenizer is not None else []
    return tuple(dict.fromkeys(t for t in (*extra, *specials) if t))


def _builtin(
    spec: TemplateSpec,
    tokenizer: Any,
    model_name: str | None,
    system_prompt: str | None,
    add_bos: bool | None,
    role_names: Mapping[str, str] | None,
) -> BuiltinChatFormat:
    if tokenizer is None:
        bos, eos = spec.default_bos, spec.default_eos
    else:
        bos, eos = tokenizer.bos_token or "", tokenizer.eos_token or ""
    want_bos = add_bos if add_bos is not None else spec.add_bos
    if want_bos is None:
        want_bos = _tokenizer_adds_bos(tokenizer)
    bos_text = bos if want_bos else ""
    if tokenizer is not None:
        missing = missing_tokens(spec, tokenizer, bos=bos_text, eos=eos)
        if missing:
            model = model_name or getattr(tokenizer, "name_or_path", "") or "this model"
            fits = fitting_templates(tokenizer)
            raise ForgeError(
                f"The '{spec.name}' chat template does not fit {model}: its tokens "
                f"{', '.join(missing)} are not single tokens of the model's vocabulary.",
                fix=f"Use a template that fits this vocabulary: {', '.join(fits) or 'alpaca'}"
                " (or 'auto' to detect it).",
                code=ErrorCode.TEMPLATE_MISFIT,
                data={"template": spec.name, "model": model, "missing": list(missing), "fits": list(fits)},
            )
    system = spec.default_system if system_prompt is None else system_prompt
    return BuiltinChatFormat(
        spec=spec,
        bos_text=bos_text,
        eos_text=eos,
        system_prompt=system or None,  # "" means: no system prompt
        role_names=_role_names(spec, role_names),
        forbidden=_control_tokens(tokenizer, *spec.special_tokens, bos_text, eos),
    )


def build_chat_format(
    name: str,
    tokenizer: Any = None,
    *,
    system_prompt: str | None = None,
    add_bos: bool | None = None,
    role_names: Mapping[str, str] | None = None,
    jinja_template: str | None = None,
    model_name: str | None = None,
    model_config: Mapping[str, Any] | None = None,
) -> ChatFormat:
    """Build the chat format ``name`` (a builtin family, 'custom', 'tokenizer' or 'auto').

    system_prompt: used when a conversation has none (None = the family default, "" = none).
    add_bos: None = the family default. role_names: canonical role -> display name (builtins only).
    """
    if name == "auto":
        name = detect_template(model_name, model_config, tokenizer)
    if name in FAMILIES:
        return _builtin(FAMILIES[name], tokenizer, model_name, system_prompt, add_bos, role_names)
    if name not in ("custom", "tokenizer"):
        raise ForgeError(
            f"Unknown chat template {name!r}.",
            fix=f"Use one of: {', '.join(TEMPLATE_NAMES)}.",
            code=ErrorCode.TEMPLATE_UNKNOWN,
            data={"template": name},
        )
    if name == "custom":
        template = jinja_template
        if not template or not template.strip():
            raise ForgeError(
                "The 'custom' chat template needs a Jinja template.",
                fix="Set model.chat_template.jinja in forge.yaml: a Jinja template, inline or a .jinja file's path.",
                code=ErrorCode.TEMPLATE_MISSING,
                data={"template": name},
            )
    else:
        template = tokenizer_chat_template(tokenizer)
        if template is None:
            raise ForgeError(
                "The 'tokenizer' chat template was asked for, but the tokenizer has no chat_template.",
                fix=f"Use a builtin template ({', '.join(BUILTIN_NAMES)}) or 'auto'.",
                code=ErrorCode.TOKENIZER_NO_TEMPLATE,
                data={"template": name},
            )
    if tokenizer is None:
        raise ForgeError(
            f"The '{name}' chat template is rendered through the model's tokenizer; none given.",
            fix="Load the model's tokenizer first.",
            code=ErrorCode.TEMPLATE_MISSING,
            data={"template": name},
        )
    if role_names or add_bos is not None:
        raise ForgeError(
            f"role_names and add_bos apply to builtin templates only, not '{name}'.",
            fix="Edit the Jinja template itself, or use a builtin template.",
            code=ErrorCode.TEMPLATE_INVALID,
            data={"template": name},
        )
    jinja = JinjaChatFormat(
        name=name,
        template=template,
        tokenizer=tokenizer,
        system_prompt=system_prompt or None,
        forbidden=_control_tokens(tokenizer),
    )
    # Same text as a builtin family on every probe -> render with the builtin (exact spans, much faster).
    candidates = family_candidates(
        tokenizer, lambda family, tok: _builtin(FAMILIES[family], tok, model_name, None, None, None)
    )
    return equivalent_builtin(jinja, candidates) or jinja
