"""Support code for the template tests: a tiny in-memory fast tokenizer and small helpers."""

from __future__ import annotations

from forgellm.templates import FAMILIES, IGNORE_INDEX

# Every marker of every builtin family, as added special tokens of the tiny tokenizer.
ALL_SPECIALS = (
    "<s>",
    "</s>",
    "<unk>",
    "<pad>",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<bos>",
    "<eos>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
)


def make_tokenizer(
    *,
    bos: str | None = "<s>",
    eos: str | None = "</s>",
    pad: str | None = "<pad>",
    specials: tuple[str, ...] = ALL_SPECIALS,
    chat_template: str | None = None,
    adds_bos: bool = False,
):
    """A byte-level BPE without merges: one token per byte, so token boundaries fall on characters.

    It lets tests check labels exactly (decode of trained tokens == trained text) without any download.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    alphabet = ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    if adds_bos:  # like Llama tokenizers: BOS in front of plain text
        backend.add_special_tokens([bos])
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, backend.token_to_id(bos))]
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token="<unk>" if "<unk>" in specials else None,
    )
    tok.add_special_tokens({"additional_special_tokens": [s for s in specials if s not in (bos, eos, pad)]})
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def family_tokenizer(family: str, **kwargs):
    """The tiny tokenizer with the family's own BOS/EOS, so renders match the no-tokenizer goldens."""
    spec = FAMILIES[family]
    return make_tokenizer(bos=spec.default_bos or None, eos=spec.default_eos, **kwargs)


def trained_ids(tokenized) -> list[int]:
    return [t for t, lab in zip(tokenized.input_ids, tokenized.labels, strict=True) if lab != IGNORE_INDEX]


def hf_render(tokenizer, template: str, messages, add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
    )
