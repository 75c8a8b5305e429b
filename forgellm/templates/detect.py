"""Which template fits a model: detection, vocabulary compatibility, the pad == eos warning."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .families import FAMILIES, TemplateSpec
from .messages import ChatFormat

# Checked against the lower-cased model name before model_type: these models report model_type
# "llama" but do not use a Llama template.
_NAME_FIRST = (("tinyllama", "zephyr"), ("smollm", "chatml"))
_MODEL_TYPES = {
    "qwen2": "chatml",
    "qwen2_moe": "chatml",
    "qwen3": "chatml",
    "qwen3_moe": "chatml",
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3_text": "gemma",
    "mistral": "mistral",
    "phi3": "phi3",
}
_NAME_PATTERNS = (
    ("qwen", "chatml"),
    ("gemma", "gemma"),
    ("mistral", "mistral"),
    ("phi-3", "phi3"),
    ("phi3", "phi3"),
    ("zephyr", "zephyr"),
    ("alpaca", "alpaca"),
)
# Special tokens that identify a family when nothing else does, most specific first.
_VOCAB_SIGNATURES = (
    ("llama3", ("<|start_header_id|>", "<|eot_id|>")),
    ("chatml", ("<|im_start|>", "<|im_end|>")),
    ("gemma", ("<start_of_turn>", "<end_of_turn>")),
    ("phi3", ("<|user|>", "<|assistant|>", "<|end|>")),
)


def tokenizer_chat_template(tokenizer: Any) -> str | None:
    """The tokenizer's own Jinja template, if any (a dict of named templates yields 'default')."""
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if isinstance(template, Mapping):
        template = template.get("default")
    return template if isinstance(template, str) and template.strip() else None


def is_single_token(tokenizer: Any, text: str) -> bool:
    """Does ``text`` tokenize to exactly one token (not the unknown token)?"""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    unk = getattr(tokenizer, "unk_token_id", None)
    return len(ids) == 1 and (unk is None or ids[0] != unk or text == tokenizer.unk_token)


def _has_tokens(tokenizer: Any, tokens: tuple[str, ...]) -> bool:
    return tokenizer is not None and all(is_single_token(tokenizer, t) for t in tokens)


def _llama_variant(tokenizer: Any) -> str:
    return "llama3" if _has_tokens(tokenizer, ("<|eot_id|>",)) else "llama2"


def detect_template(model_name: str | None, model_config: Mapping[str, Any] | None, tokenizer: Any) -> str:
    """Pick a template name: 'tokenizer' when the tokenizer has its own template, else a builtin."""
    if tokenizer_chat_template(tokenizer) is not None:
        return "tokenizer"
    name = (model_name or getattr(tokenizer, "name_or_path", "") or "").lower()
    for pattern, family in _NAME_FIRST:
        if pattern in name:
            return family
    model_type = str((model_config or {}).get("model_type", "")).lower()
    if model_type == "llama":
        return _llama_variant(tokenizer)
    if model_type in _MODEL_TYPES:
        return _MODEL_TYPES[model_type]
    for pattern, family in _NAME_PATTERNS:
        if pattern in name:
            return family
    if "llama" in name:
        return "llama3" if ("llama-3" in name or "llama3" in name) else _llama_variant(tokenizer)
    for family, tokens in _VOCAB_SIGNATURES:
        if _has_tokens(tokenizer, tokens):
            return family
    return "alpaca"


def missing_tokens(spec: TemplateSpec, tokenizer: Any, *, bos: str = "", eos: str = "") -> list[str]:
    """Markers of ``spec`` (plus the BOS/EOS it uses) that are not single tokens of the vocabulary."""
    needed = list(spec.special_tokens)
    if bos and spec.uses_bos:
        needed.append(bos)
    if spec.uses_eos:
        if not eos:
            return ["<an EOS token (the tokenizer has none)>"]
        needed.append(eos)
    return [t for t in dict.fromkeys(needed) if not is_single_token(tokenizer, t)]


def fitting_templates(tokenizer: Any) -> list[str]:
    """Builtin families whose markers are all single tokens of this tokenizer."""
    eos = getattr(tokenizer, "eos_token", None) or ""
    return [name for name, spec in FAMILIES.items() if not missing_tokens(spec, tokenizer, eos=eos)]


def pad_token_warning(chat_format: ChatFormat, tokenizer: Any) -> str | None:
    """A warning when the pad token is the template's stop token, else None."""
    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None:
        return None
    for marker in chat_format.stop_markers:
        ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
        if ids == [pad_id]:
            return (
                f"pad == eos: the pad token {tokenizer.pad_token!r} is also the stop token {marker!r} of the "
                f"'{chat_format.name}' template. A collator that masks pad tokens would also mask the stop "
                "token; Forge's labels keep it, but any collator or packing code must mask padding by the "
                "attention mask, not by token id, or the model never learns to stop."
            )
    return None
