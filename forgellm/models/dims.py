"""A decoder's dimensions and context length, and the one reader of them from a Hugging Face config.

The catalog declares ModelDims for its models; the planner reads them from a user's config.json; the
memory estimator and the GGUF converter take them from here. Multimodal configs (Gemma 3, Qwen-VL)
keep the decoder's numbers under ``text_config``, so every reader looks there first. A config is a
config.json dict or a transformers config object: both are read the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# What a config.json that states no context is assumed to hold: older Llama-style models had 2048.
DEFAULT_CONTEXT_LENGTH = 2048


@dataclass(frozen=True)
class ModelDims:
    """The sizes of a decoder-only transformer that memory and GGUF layout depend on."""

    n_layers: int
    hidden_size: int
    intermediate_size: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    tied_embeddings: bool
    # Gemma-2 uses head_dim=256, not hidden/n_heads; None is filled with hidden_size // n_heads.
    head_dim: int | None = None

    def __post_init__(self) -> None:
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.n_heads)


class IncompleteConfig(ValueError):
    """A config lacks a number Forge needs; ``key`` names it, for the caller's own message."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _get(config: Any, key: str) -> Any:
    return config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)


def text_config(config: Any) -> Any:
    """The decoder's section: ``text_config`` of a multimodal config, else the config itself."""
    inner = _get(config, "text_config")
    return inner if inner is not None else config


def context_length_of(config: Any) -> int | None:
    """The longest sequence the model was trained for (max_position_embeddings); None when unstated."""
    value = _get(text_config(config), "max_position_embeddings")
    return int(value) if value else None


def context_length_or_default(config: Any) -> int:
    """The context length, or DEFAULT_CONTEXT_LENGTH where the config states none (for sizing only)."""
    return context_length_of(config) or DEFAULT_CONTEXT_LENGTH


def _required(section: Any, key: str) -> int:
    value = _get(section, key)
    if value is None:
        raise IncompleteConfig(key)
    return int(value)


def dims_from_config(config: Any) -> ModelDims:
    """ModelDims of a config; raises IncompleteConfig naming the first missing size."""
    text = text_config(config)
    heads = _required(text, "num_attention_heads")
    hidden = _required(text, "hidden_size")
    head_dim = _get(text, "head_dim")
    return ModelDims(
        n_layers=_required(text, "num_hidden_layers"),
        hidden_size=hidden,
        intermediate_size=_required(text, "intermediate_size"),
        n_heads=heads,
        n_kv_heads=int(_get(text, "num_key_value_heads") or heads),
        vocab_size=_required(text, "vocab_size"),
        tied_embeddings=bool(_get(text, "tie_word_embeddings") or False),
        head_dim=int(head_dim) if head_dim is not None else None,
    )
