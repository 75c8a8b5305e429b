"""Which transformers architectures Forge's GGUF converter can write, named once.

The converter (export/gguf_arch.py) reads this table to pick llama.cpp's architecture name; the planner
asks ``gguf_exportable`` to warn before training a model that `forge export` could not convert. It
lives here, below both, so the two can never disagree.
"""

from __future__ import annotations

# HF `model_type` -> llama.cpp architecture name. Mistral runs as llama in llama.cpp.
GGUF_ARCHITECTURES: dict[str, str] = {
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "qwen2",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "phi3": "phi3",
}


def gguf_exportable(model_type: str | None) -> bool:
    """Whether `forge export` can write a GGUF for a model of this transformers model_type."""
    return model_type in GGUF_ARCHITECTURES
