"""Tiny random models of every architecture the GGUF converter supports, built in-process.

Weights are re-drawn at a scale where attention and rotary embeddings change the logits visibly
(HF's 0.02 init gives near-uniform logits that would hide a wrong tensor layout).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

ARCHITECTURES = ("llama", "mistral", "qwen2", "gemma", "gemma2", "phi3")
# Variants exercise rules the plain configs do not: an untied lm_head and Llama 3 rope scaling.
VARIANTS = {
    "llama": {"num_key_value_heads": 2, "tie_word_embeddings": True},
    "llama3-rope": {
        "num_key_value_heads": 2,
        "tie_word_embeddings": False,
        # original context 32 and head_dim 16 put frequencies in all three bands of the llama3 rule.
        "rope_parameters": {
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
    },
    "mistral": {"num_key_value_heads": 2, "sliding_window": 4096},
    "qwen2": {"num_key_value_heads": 2, "tie_word_embeddings": False},
    "gemma": {"num_key_value_heads": 1},
    "gemma2": {"num_key_value_heads": 2, "query_pre_attn_scalar": 16, "sliding_window": 128},
    "phi3": {"num_key_value_heads": 2, "original_max_position_embeddings": 256},
    # Phi-3 128k style: per-frequency factors and an attention factor from the context extension (256/16).
    # Test sequences are longer than 16 tokens, so transformers and llama.cpp both use the long factors.
    "phi3-longrope": {
        "num_key_value_heads": 2,
        "rope_parameters": {
            "rope_type": "longrope",
            "rope_theta": 10000.0,
            "original_max_position_embeddings": 16,
            "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.1, 3.8],
            "long_factor": [1.0, 1.5, 2.5, 4.0, 6.0, 8.0, 10.0, 12.0],
        },
        "original_max_position_embeddings": 16,
    },
}
_MODEL_TYPE = {"llama3-rope": "llama", "phi3-longrope": "phi3"}
_SPM_TEXT = (
    "the quick brown fox jumps over the lazy dog. then the other fox thought about it. "
    "there are three things: this, that and the rest. hello world, hello there!"
)


def model_type_of(variant: str) -> str:
    return _MODEL_TYPE.get(variant, variant)


def make_spm_tokenizer():
    """A SentencePiece-style BPE with byte fallback (like TinyLlama/Mistral/Gemma tokenizer.json files).

    <unk>, <s>, </s>, then the 256 <0xNN> byte tokens, then pieces and merges learnt from a short text.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    def spm_normalizer():
        return normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])

    learner = Tokenizer(models.BPE(unk_token="<unk>"))
    learner.normalizer = spm_normalizer()
    learner.train_from_iterator([_SPM_TEXT] * 4, trainers.BpeTrainer(vocab_size=120, show_progress=False))
    learnt = learner.get_vocab()
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{byte:02X}>": 3 + byte for byte in range(256)})
    for piece, _ in sorted(learnt.items(), key=lambda item: item[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in _learnt_merges(learner)]
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    backend.normalizer = spm_normalizer()
    backend.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    backend.add_special_tokens(["<unk>", "<s>", "</s>"])
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def _learnt_merges(learner) -> list:
    import json

    return json.loads(learner.to_str())["model"]["merges"]


def make_byte_bpe_tokenizer():
    """A GPT-2 style byte-level BPE with merges learnt from a short text and the chatml markers.

    (templates_support.make_tokenizer has no merges at all; llama.cpp refuses a gpt2 vocab without them.)
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=340,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([_SPM_TEXT] * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )


def tokenizer_for(variant: str):
    """Byte-level BPE (gpt2 kind) for Llama/Qwen2, SentencePiece-style for the others, as their real models."""
    if model_type_of(variant) in ("llama", "qwen2"):
        return make_byte_bpe_tokenizer()
    return make_spm_tokenizer()


def tiny_config(variant: str, tokenizer):
    import transformers

    model_type = model_type_of(variant)
    config_class = transformers.AutoConfig.for_model(model_type).__class__
    settings = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "head_dim": 16,
        "max_position_embeddings": 256,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "rms_norm_eps": 1e-6,
    }
    if model_type == "phi3":
        settings.pop("head_dim")
    settings.update(VARIANTS[variant])
    return config_class(**settings)


def randomize_weights(model, norm_center: float) -> None:
    import torch

    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.dim() == 2:
                scale = 1.0 if "embed" in name else 1.0 / math.sqrt(param.shape[1])
                param.copy_(noise * scale)
            elif name.endswith("norm.weight"):
                param.copy_(norm_center + 0.1 * noise)
            else:
                param.copy_(0.1 * noise)


def make_tiny_model(folder: Path, variant: str, tokenizer=None) -> Path:
    """Save a random 2-layer model of `variant` (an ARCHITECTURES entry or a VARIANTS key) with a tokenizer
    (the architecture's usual kind unless one is given)."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = tokenizer or tokenizer_for(variant)
    config = tiny_config(variant, tokenizer)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Gemma stores RMSNorm weights as offsets from 1 (x * (1 + w)).
    randomize_weights(model, norm_center=0.0 if model_type_of(variant).startswith("gemma") else 1.0)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def load_hf_model(folder: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()


def hf_logits(model, ids: list[int]):
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def read_fields(path: Path) -> dict:
    """GGUF key/value pairs as Python values (arrays as lists)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    return {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}


@contextlib.contextmanager
def one_torch_thread():
    """torch and llama.cpp both spin-wait at their thread barriers; on a shared 2-core machine two pools
    of spinning threads starve each other (a 32-token greedy run was measured at minutes). One thread each."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
