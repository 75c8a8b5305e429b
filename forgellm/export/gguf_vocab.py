"""The tokenizer part of a GGUF: token list, types, merges or scores, special ids, chat template.

Two llama.cpp tokenizer models are written:
- `gpt2`: byte-level BPE (SmolLM, Qwen2, Llama 3). Tokens and merges as in tokenizer.json, plus
  `tokenizer.ggml.pre`, the name of the pre-tokenizer regex llama.cpp applies before the merges.
- `llama`: SentencePiece-style BPE with byte fallback (TinyLlama, Mistral, Gemma, Phi-3). Read from
  tokenizer.model when the `sentencepiece` package is importable, else from tokenizer.json, whose merge
  ranks become the scores llama.cpp merges by.
Everything is read from the tokenizer transformers loads, so what llama.cpp tokenizes matches training.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgellm.errors import ErrorCode, ForgeError, cause

# gguf.TokenType values, spelled out so this module imports without gguf.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# The split regexes of two tokenizer families (as in their tokenizer.json) and llama.cpp's names for them.
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_KNOWN_SPLITS = {_LLAMA3_REGEX: "llama-bpe", _QWEN2_REGEX: "qwen2"}
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")
_SPECIAL_KINDS = ("bos", "eos", "unk", "pad")


@dataclass
class GGUFVocab:
    """What `write_vocab` puts under `tokenizer.*`."""

    model: str
    pre: str
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] = field(default_factory=list)
    special_ids: dict[str, int] = field(default_factory=dict)
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool | None = None
    chat_template: str | None = None


def _load_tokenizer(hf_dir: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    except Exception as exc:  # transformers raises many kinds for missing or damaged files
        raise ForgeError(
            f"Could not load the tokenizer in {hf_dir} ({type(exc).__name__}: {exc}).",
            fix="The folder needs tokenizer.json (or tokenizer.model plus `pip install sentencepiece`) and "
            "tokenizer_config.json as transformers saves them.",
            code=ErrorCode.TOKENIZER_UNREADABLE, data={"cause": cause(exc)},
        ) from None
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ForgeError(
            f"The tokenizer in {hf_dir} is not a fast (tokenizers) tokenizer; GGUF export reads tokenizer.json.",
            fix="Save the tokenizer with a recent transformers so that tokenizer.json is written.",
            code=ErrorCode.TOKENIZER_UNSUPPORTED,
        )
    return tokenizer


def _steps(section: Mapping[str, Any] | None, list_key: str) -> list[Mapping[str, Any]]:
    """Flatten a tokenizer.json normalizer/pre_tokenizer (possibly a Sequence) into its steps."""
    if not section:
        return []
    if section.get("type") == "Sequence":
        return [step for inner in section.get(list_key, []) for step in _steps(inner, list_key)]
    return [section]


def bpe_pre_name(spec: Mapping[str, Any]) -> str:
    """llama.cpp's name for the pre-tokenizer in this tokenizer.json, judged by what it does.

    llama.cpp's converter hashes a sample tokenization against a list of hub models; this reads the same
    behaviour from the pre-tokenizer: the GPT-2 regex (plus single-digit splitting for SmolLM), or the
    Llama 3 / Qwen2 split regexes. A byte-level tokenizer recognised as none of them gets "default".
    """
    steps = _steps(spec.get("pre_tokenizer"), "pretokenizers")
    regexes = [s.get("pattern", {}).get("Regex") for s in steps if s.get("type") == "Split"]
    byte_level_regex = any(s.get("type") == "ByteLevel" and s.get("use_regex", True) for s in steps)
    single_digits = any(s.get("type") == "Digits" and s.get("individual_digits") for s in steps)
    for regex in regexes:
        if regex in _KNOWN_SPLITS:
            return _KNOWN_SPLITS[regex]
    if byte_level_regex and not regexes:
        return "smollm" if single_digits else "gpt-2"
    return "default"


def _looks_special(text: str) -> bool:
    """Added tokens that some models forget to flag as special (llama.cpp treats them as control too)."""
    return (text.startswith("<|") and text.endswith("|>")) or text in ("<pad>", "<mask>") or text.startswith("<unused")


def _empty_table(n_vocab: int) -> tuple[list[str | None], list[int], list[float]]:
    return [None] * n_vocab, [UNUSED] * n_vocab, [0.0] * n_vocab


def _check_id(idx: int, n_vocab: int, text: str) -> None:
    if idx >= n_vocab:
        raise ForgeError(
            f"Token {text!r} has id {idx}, but the model's embedding matrix has only {n_vocab} rows.",
            fix="Resize the model's token embeddings to the tokenizer (model.resize_token_embeddings) before "
            "exporting.",
            code=ErrorCode.EXPORT_UNSUPPORTED,
        )


def _overlay_added(spec: Mapping[str, Any], tokens: list, types: list[int], n_vocab: int) -> None:
    """Added tokens: special ones become CONTROL (matched whole, never split), others USER_DEFINED."""
    for added in spec.get("added_tokens", []):
        idx, text = int(added["id"]), str(added["content"])
        _check_id(idx, n_vocab, text)
        tokens[idx] = text
        if types[idx] in (UNKNOWN, BYTE):  # SentencePiece's <unk> and byte pieces keep their own roles
            continue
        types[idx] = CONTROL if added.get("special") or _looks_special(text) else USER_DEFINED


def _fill_unused(tokens: list[str | None]) -> list[str]:
    """Embedding rows beyond the tokenizer (padding to a multiple of 64 etc.) get placeholder tokens."""
    return [text if text is not None else f"[PAD{i}]" for i, text in enumerate(tokens)]


def _merge_pairs(merges: Sequence[Any]) -> list[tuple[str, str]]:
    pairs = []
    for merge in merges:
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        pairs.append((left, right))
    return pairs


def _gpt2_vocab(spec: Mapping[str, Any], n_vocab: int) -> GGUFVocab:
    tokens, types, _ = _empty_table(n_vocab)
    for text, idx in spec["model"]["vocab"].items():
        _check_id(idx, n_vocab, text)
        tokens[idx], types[idx] = text, NORMAL
    _overlay_added(spec, tokens, types, n_vocab)
    # A space inside a merge part is written as U+0120+... like gguf's SpecialVocab does (llama.cpp #9692).
    merges = [
        " ".join(part.replace(" ", chr(ord(" ") + 256)) for part in pair)
        for pair in _merge_pairs(spec["model"].get("merges", []))
    ]
    return GGUFVocab("gpt2", bpe_pre_name(spec), _fill_unused(tokens), types, merges=merges)


def _spm_vocab_from_json(spec: Mapping[str, Any], n_vocab: int) -> GGUFVocab:
    """llama.cpp merges the adjacent pair whose joined piece has the highest score: the merge rank gives it."""
    model = spec["model"]
    rank: dict[str, int] = {}
    for position, (left, right) in enumerate(_merge_pairs(model.get("merges", []))):
        rank.setdefault(left + right, position)
    tokens, types, scores = _empty_table(n_vocab)
    unk = model.get("unk_token")
    for text, idx in model["vocab"].items():
        _check_id(idx, n_vocab, text)
        tokens[idx] = text
        if _BYTE_TOKEN.fullmatch(text):
            types[idx] = BYTE
        elif text == unk:
            types[idx] = UNKNOWN
        else:
            types[idx] = NORMAL
            scores[idx] = -float(rank[text]) if text in rank else (0.0 if len(text) == 1 else -float(n_vocab + idx))
    _overlay_added(spec, tokens, types, n_vocab)
    return GGUFVocab("llama", "default", _fill_unused(tokens), types, scores=scores)


def _spm_vocab_from_model(path: Path, spec: Mapping[str, Any], n_vocab: int) -> GGUFVocab:
    from sentencepiece import SentencePieceProcessor

    processor = SentencePieceProcessor()
    processor.LoadFromFile(str(path))
    tokens, types, scores = _empty_table(n_vocab)
    for idx in range(processor.vocab_size()):
        piece = processor.IdToPiece(idx)
        _check_id(idx, n_vocab, piece)
        tokens[idx], scores[idx] = piece, float(processor.GetScore(idx))
        if processor.IsUnknown(idx):
            types[idx] = UNKNOWN
        elif processor.IsControl(idx):
            types[idx] = CONTROL
        elif processor.IsUnused(idx):
            types[idx] = UNUSED
        elif processor.IsByte(idx):
            types[idx] = BYTE
        else:
            types[idx] = NORMAL
    _overlay_added(spec, tokens, types, n_vocab)
    return GGUFVocab("llama", "default", _fill_unused(tokens), types, scores=scores)


def _base_vocab(hf_dir: Path, spec: Mapping[str, Any], n_vocab: int) -> GGUFVocab:
    model = spec.get("model", {})
    kind = model.get("type")
    decoder_steps = _steps(spec.get("decoder"), "decoders")
    byte_level = any(
        s.get("type") == "ByteLevel" for s in decoder_steps + _steps(spec.get("pre_tokenizer"), "pretokenizers")
    )
    if kind == "BPE" and not model.get("byte_fallback") and byte_level:
        return _gpt2_vocab(spec, n_vocab)
    sentencepiece_file = hf_dir / "tokenizer.model"
    if sentencepiece_file.is_file() and importlib.util.find_spec("sentencepiece") is not None:
        return _spm_vocab_from_model(sentencepiece_file, spec, n_vocab)
    if kind == "BPE" and model.get("byte_fallback"):
        return _spm_vocab_from_json(spec, n_vocab)
    raise ForgeError(
        f"The tokenizer in {hf_dir} is a {kind or 'unknown'} model that the GGUF converter cannot write.",
        fix="Supported: byte-level BPE (GPT-2/Llama 3/Qwen2 style) and SentencePiece BPE with byte fallback "
        "(tokenizer.model needs `pip install sentencepiece`).",
        code=ErrorCode.TOKENIZER_UNSUPPORTED,
    )


def _special_ids(tokenizer: Any, config: Mapping[str, Any], n_vocab: int) -> dict[str, int]:
    ids: dict[str, int] = {}
    for kind in _SPECIAL_KINDS:
        value = getattr(tokenizer, f"{kind}_token_id", None)
        if value is None:
            value = config.get(f"{kind}_token_id")
            value = value[0] if isinstance(value, list) and value else value
        if isinstance(value, int) and 0 <= value < n_vocab:
            ids[kind] = value
    return ids


def _single_token(tokenizer: Any, text: str) -> int | None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


def read_vocab(
    hf_dir: Path,
    n_vocab: int,
    *,
    config: Mapping[str, Any] | None = None,
    eot_tokens: Sequence[str] = (),
    add_bos: bool | None = None,
    chat_template: str | None = None,
) -> GGUFVocab:
    """Everything `write_vocab` needs, read from the tokenizer of `hf_dir` (n_vocab = embedding rows)."""
    tokenizer = _load_tokenizer(hf_dir)
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = _base_vocab(hf_dir, spec, n_vocab)
    vocab.special_ids = _special_ids(tokenizer, config or {}, n_vocab)
    if vocab.model == "llama" and "unk" in vocab.special_ids:  # byte fallback replaces it; never a control token
        vocab.types[vocab.special_ids["unk"]] = UNKNOWN
    for text in eot_tokens:
        if (eot := _single_token(tokenizer, text)) is not None:
            vocab.special_ids["eot"] = eot
            break
    # What the HF tokenizer does on plain text is what training saw.
    plain = tokenizer("a")["input_ids"]
    bos, eos = vocab.special_ids.get("bos"), vocab.special_ids.get("eos")
    vocab.add_bos = bool(plain and bos is not None and plain[0] == bos) if add_bos is None else add_bos
    vocab.add_eos = bool(len(plain) >= 2 and eos is not None and plain[-1] == eos)
    if vocab.model == "llama":
        pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode("a", add_special_tokens=False))
        vocab.add_space_prefix = bool(pieces) and pieces[0].startswith("\u2581")
    template = chat_template if chat_template is not None else getattr(tokenizer, "chat_template", None)
    vocab.chat_template = template if isinstance(template, str) and template else None
    return vocab


def write_vocab(writer: Any, vocab: GGUFVocab) -> None:
    """Add the `tokenizer.*` keys to a gguf.GGUFWriter."""
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    elif vocab.model == "gpt2":
        # llama.cpp requires the key even when there is nothing to merge (a pure byte-level vocabulary).
        import gguf

        kinds = gguf.GGUFValueType
        writer.add_key_value(gguf.Keys.Tokenizer.MERGES, [], kinds.ARRAY, sub_type=kinds.STRING)
    for kind, idx in vocab.special_ids.items():
        getattr(writer, f"add_{kind}_token_id")(idx)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)
