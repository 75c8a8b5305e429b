"""What each supported architecture needs in a GGUF file: hyperparameter keys and tensor fix-ups.

llama.cpp reads a fixed set of `<arch>.*` keys and expects some weights in its own layout. The rules
here follow llama.cpp's own converter: Llama's q/k projections are permuted to its interleaved rotary
layout; Gemma's RMSNorm weights are stored as (1 + w) because HF Gemma multiplies by (1 + w); Llama 3
rope scaling becomes a `rope_freqs` tensor; Phi-3's long-rope factors become two tensors.
The parity tests (llama.cpp logits vs transformers) are what proves each rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from forgellm.errors import ErrorCode, ForgeError
from forgellm.models.architectures import GGUF_ARCHITECTURES  # the table planning warns from, too
from forgellm.models.dims import IncompleteConfig, ModelDims, context_length_of, dims_from_config

_GENERIC_ROPE = ("default", "linear", "yarn")
_ARCH_ROPE = {"llama": ("llama3",), "phi3": ("longrope", "su")}


@dataclass(frozen=True)
class ArchConfig:
    """The numbers of an HF config.json that the GGUF needs, read once and checked."""

    model_type: str
    arch: str
    dims: ModelDims  # the one reader's sizes (models/dims.py)
    explicit_head_dim: bool
    rms_eps: float
    context_length: int
    rope_theta: float
    rope: Mapping[str, Any]
    rope_type: str
    tied_embeddings: bool | None  # as config.json states it; None (unstated) differs from False here
    raw: Mapping[str, Any]

    @property
    def norm_plus_one(self) -> bool:
        """HF Gemma RMSNorm computes x * (1 + w); llama.cpp multiplies by the stored weight."""
        return self.model_type in ("gemma", "gemma2")

    @property
    def drops_lm_head(self) -> bool:
        """Tied models reuse token_embd as the output matrix; Gemma always does in llama.cpp."""
        return bool(self.tied_embeddings) or self.norm_plus_one


def _supported_list() -> str:
    return ", ".join(sorted(GGUF_ARCHITECTURES))


def _missing(key: str, model_type: str) -> ForgeError:
    return ForgeError(
        f"config.json of this {model_type} model has no `{key}`; cannot write a GGUF without it.",
        fix="Export from a complete Hugging Face model folder (config.json as saved by transformers).",
        code=ErrorCode.MODEL_UNSUPPORTED,
    )


def _rope_section(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """transformers 5 keeps rope settings (theta included) under `rope_parameters`; older configs use
    `rope_scaling` plus a top-level `rope_theta`. Reading the wrong place breaks every position > 0."""
    rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    if isinstance(rope.get("full_attention"), Mapping):
        rope = dict(rope["full_attention"])
    return rope


def read_arch_config(cfg: Mapping[str, Any]) -> ArchConfig:
    """Parse and check an HF config.json dict; unsupported models raise ForgeError before any work."""
    model_type = str(cfg.get("model_type") or "")
    arch = GGUF_ARCHITECTURES.get(model_type)
    if arch is None:
        named = f"'{model_type}'" if model_type else "an unknown architecture (config.json has no model_type)"
        raise ForgeError(
            f"Cannot export {named} to GGUF: Forge's converter supports {_supported_list()}.",
            fix="Fine-tune one of the supported architectures, or convert the merged folder with llama.cpp's "
            "convert_hf_to_gguf.py yourself.",
            code=ErrorCode.EXPORT_UNSUPPORTED,
        )
    if cfg.get("quantization_config"):
        raise ForgeError(
            "This model's weights are quantized (config.json has `quantization_config`); GGUF export needs "
            "plain float weights.",
            fix="Export from the merged full-precision folder (training with QLoRA merges into float weights).",
            code=ErrorCode.EXPORT_UNSUPPORTED,
        )
    try:
        dims = dims_from_config(cfg)
    except IncompleteConfig as exc:
        raise _missing(exc.key, model_type) from None
    context_length = context_length_of(cfg)
    if context_length is None:
        raise _missing("max_position_embeddings", model_type)
    rope = _rope_section(cfg)
    rope_type = str(rope.get("rope_type") or rope.get("type") or "default").lower()
    if rope_type not in _GENERIC_ROPE + _ARCH_ROPE.get(arch, ()):
        raise ForgeError(
            f"RoPE scaling type '{rope_type}' of this {model_type} model is not supported by the GGUF converter.",
            fix=f"Supported for {model_type}: {', '.join(_GENERIC_ROPE + _ARCH_ROPE.get(arch, ()))}.",
            code=ErrorCode.EXPORT_UNSUPPORTED,
        )
    if model_type == "gemma2":
        _check_gemma2_query_scale(cfg, dims.head_dim, dims.hidden_size // dims.n_heads)
    return ArchConfig(
        model_type=model_type,
        arch=arch,
        dims=dims,
        explicit_head_dim=cfg.get("head_dim") is not None,
        rms_eps=float(cfg.get("rms_norm_eps") or 1e-6),
        context_length=context_length,
        rope_theta=float(rope.get("rope_theta") or cfg.get("rope_theta") or 10000.0),
        rope=rope,
        rope_type=rope_type,
        tied_embeddings=cfg.get("tie_word_embeddings"),
        raw=cfg,
    )


def _check_gemma2_query_scale(cfg: Mapping[str, Any], head_dim: int, hidden_per_head: int) -> None:
    """llama.cpp scales Gemma 2 queries by 1/sqrt(head_dim), or by 1/sqrt(hidden/heads) for the 46-layer 27B;
    HF uses query_pre_attn_scalar. Any other value would give a GGUF that silently computes something else."""
    scalar = cfg.get("query_pre_attn_scalar")
    allowed = {head_dim} | ({hidden_per_head} if cfg.get("num_hidden_layers") == 46 else set())
    if scalar is not None and int(scalar) not in allowed:
        raise ForgeError(
            f"This Gemma 2 model scales queries by query_pre_attn_scalar={scalar}, which llama.cpp does not "
            f"support (it uses head_dim={head_dim}).",
            fix="Export a Gemma 2 model with the standard configuration (2B, 9B or 27B).",
            code=ErrorCode.EXPORT_UNSUPPORTED,
        )


def check_exportable(hf_config: Mapping[str, Any]) -> str:
    """HF config.json dict -> llama.cpp architecture name; ForgeError naming the supported ones otherwise."""
    return read_arch_config(hf_config).arch


def _phi3_rope_dims(ac: ArchConfig) -> int:
    factor = ac.rope.get("partial_rotary_factor", ac.raw.get("partial_rotary_factor")) or 1.0
    return int(float(factor) * ac.dims.hidden_size) // ac.dims.n_heads


def _phi3_original_context(ac: ArchConfig) -> int:
    return int(
        ac.rope.get("original_max_position_embeddings")
        or ac.raw.get("original_max_position_embeddings")
        or ac.context_length
    )


def write_hparams(writer: Any, ac: ArchConfig) -> None:
    """The `<arch>.*` keys llama.cpp reads for this architecture (general.file_type is the caller's)."""
    import gguf

    writer.add_context_length(ac.context_length)
    writer.add_embedding_length(ac.dims.hidden_size)
    writer.add_feed_forward_length(ac.dims.intermediate_size)
    writer.add_block_count(ac.dims.n_layers)
    writer.add_head_count(ac.dims.n_heads)
    writer.add_head_count_kv(ac.dims.n_kv_heads)
    writer.add_layer_norm_rms_eps(ac.rms_eps)
    writer.add_rope_freq_base(ac.rope_theta)
    if ac.explicit_head_dim or ac.norm_plus_one:
        writer.add_key_length(ac.dims.head_dim)
        writer.add_value_length(ac.dims.head_dim)
    if ac.arch == "llama":
        writer.add_vocab_size(ac.dims.vocab_size)
        writer.add_rope_dimension_count(ac.dims.head_dim)
    factor = ac.rope.get("factor")
    if ac.rope_type == "linear" and factor:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(factor))
    elif ac.rope_type == "yarn" and factor:
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(factor))
        writer.add_rope_scaling_orig_ctx_len(int(ac.rope["original_max_position_embeddings"]))
    if ac.model_type == "gemma2":
        writer.add_attn_logit_softcapping(float(ac.raw.get("attn_logit_softcapping") or 0.0))
        writer.add_final_logit_softcapping(float(ac.raw.get("final_logit_softcapping") or 0.0))
        writer.add_sliding_window(int(ac.raw.get("sliding_window") or ac.context_length))
    if ac.arch == "phi3":
        writer.add_rope_dimension_count(_phi3_rope_dims(ac))
        writer.add_rope_scaling_orig_ctx_len(_phi3_original_context(ac))
        # llama.cpp reads 0 as "no sliding window" (Phi-4); Phi-3 configs may hold null.
        writer.add_sliding_window(int(ac.raw.get("sliding_window") or 0))
        if ac.rope_type in ("longrope", "su"):
            scale = ac.context_length / _phi3_original_context(ac)
            attn = math.sqrt(1 + math.log(scale) / math.log(_phi3_original_context(ac))) if scale > 1 else 1.0
            writer.add_rope_scaling_attn_factors(float(ac.rope.get("attention_factor") or attn))


def extra_tensors(ac: ArchConfig) -> list[tuple[str, Any]]:
    """Tensors llama.cpp needs that the checkpoint does not hold (float32 numpy arrays)."""
    import numpy as np

    if ac.rope_type == "llama3":
        return [("rope_freqs.weight", _llama3_rope_factors(ac))]
    if ac.rope_type in ("longrope", "su"):
        dims = _phi3_rope_dims(ac)
        long_f, short_f = ac.rope.get("long_factor"), ac.rope.get("short_factor")
        if not long_f or not short_f or len(long_f) != dims // 2 or len(short_f) != dims // 2:
            raise ForgeError(
                f"Long-rope factors in config.json must be two lists of {dims // 2} numbers.",
                fix="Export from an unmodified Phi-3 config.json.",
                code=ErrorCode.EXPORT_UNSUPPORTED,
            )
        return [
            ("rope_factors_long.weight", np.asarray(long_f, dtype=np.float32)),
            ("rope_factors_short.weight", np.asarray(short_f, dtype=np.float32)),
        ]
    return []


def _llama3_rope_factors(ac: ArchConfig) -> Any:
    """Per-frequency divisors equivalent to transformers' llama3 inv_freq rescaling."""
    import numpy as np

    rope = ac.rope
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_context = float(rope.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_context / low, old_context / high
    inv_freq = 1.0 / (ac.rope_theta ** (np.arange(0, ac.dims.head_dim, 2, dtype=np.float64) / ac.dims.head_dim))
    factors = []
    for freq in inv_freq:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def skips_tensor(ac: ArchConfig, hf_name: str) -> bool:
    """Checkpoint tensors that have no place in the GGUF."""
    if hf_name.endswith("rotary_emb.inv_freq"):
        return True
    return hf_name == "lm_head.weight" and ac.drops_lm_head


def _permute_rotary(weight: Any, n_head: int) -> Any:
    """HF rotates halves of each head; llama.cpp's llama rotates interleaved pairs: per head (2, d/2) -> (d/2, 2)."""
    shape = weight.shape
    return weight.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def transform_tensor(ac: ArchConfig, hf_name: str, tensor: Any) -> Any:
    """Fix up one float32 torch tensor for llama.cpp's layout of this architecture."""
    if ac.arch == "llama":
        if hf_name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
            return _permute_rotary(tensor, ac.dims.n_heads)
        if hf_name.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias")):
            return _permute_rotary(tensor, ac.dims.n_kv_heads)
    if ac.norm_plus_one and hf_name.endswith("norm.weight"):
        return tensor + 1
    return tensor


def tensor_name_map(ac: ArchConfig) -> Any:
    """gguf's own HF -> GGUF tensor-name table for this architecture."""
    import gguf

    arch_enum = next(key for key, name in gguf.MODEL_ARCH_NAMES.items() if name == ac.arch)
    return gguf.get_tensor_name_map(arch_enum, ac.dims.n_layers)


def gguf_tensor_name(name_map: Any, ac: ArchConfig, hf_name: str) -> str:
    name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if name is None:
        raise ForgeError(
            f"Tensor '{hf_name}' of this {ac.model_type} model has no GGUF counterpart.",
            fix="The checkpoint holds weights a standard model of this architecture does not have; export the "
            "merged model saved by Forge, or convert it with llama.cpp's tools.",
            code=ErrorCode.EXPORT_UNSUPPORTED,
        )
    return name
