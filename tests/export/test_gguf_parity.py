"""llama.cpp runs each converted tiny model and agrees with transformers: this proves the tensor mapping.

Teacher-forced logits over a random token sequence are compared position by position; a wrong q/k
layout, norm convention or rope setting matches at position 0 at best and drifts after.
"""

from __future__ import annotations

import numpy as np
import pytest
from gguf_support import VARIANTS, hf_logits, load_hf_model, make_tiny_model, model_type_of, one_torch_thread

from forgellm.export.gguf_convert import convert_to_gguf
from forgellm.export.quantize import quantize_gguf

llama_cpp = pytest.importorskip("llama_cpp")

SEQUENCE_LENGTH = 48


@pytest.fixture(autouse=True)
def _single_threaded_torch():
    with one_torch_thread():
        yield  # beyond the llama3 variant's original context (32), so scaled frequencies matter


@pytest.fixture(scope="module")
def parity_models(tmp_path_factory):
    """Factory: variant -> (folder, loaded HF model), built once per module."""
    root = tmp_path_factory.mktemp("gguf-parity")
    built: dict = {}

    def get(variant: str):
        if variant not in built:
            folder = make_tiny_model(root / variant, variant)
            built[variant] = (folder, load_hf_model(folder))
        return built[variant]

    return get


def to_gguf(folder, out, quant: str):
    # general.name holding "phi3" makes llama.cpp look up Phi-3's own <|endoftext|>, which tiny vocabs lack.
    return convert_to_gguf(folder, out, quant=quant, model_name="tiny-test")


def open_llama(path, n_ctx: int = 64):
    return llama_cpp.Llama(
        model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, n_threads=1, verbose=False
    )


def llama_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def _token_ids(n_vocab: int, length: int) -> list[int]:
    rng = np.random.default_rng(7)
    return [int(i) for i in rng.integers(3, min(n_vocab, 259), size=length)]


@pytest.mark.parametrize(("quant", "tolerance"), [("f32", 2e-3), ("f16", 5e-3)])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_llama_cpp_logits_match_transformers(variant, quant, tolerance, parity_models, tmp_path):
    folder, model = parity_models(variant)
    ids = _token_ids(model.config.vocab_size, SEQUENCE_LENGTH)
    expected = hf_logits(model, ids)
    out = to_gguf(folder, tmp_path / f"{variant}-{quant}.gguf", quant)
    got = llama_logits(open_llama(out), ids)
    assert got.shape == expected.shape
    # Relative to the logits' spread, so the check means the same for every model.
    scale = float(np.abs(expected).max())
    worst = float(np.abs(got - expected).max()) / scale
    assert worst < tolerance, f"{variant} {quant}: max |llama.cpp - HF| = {worst:.2e} x max|logit|"
    assert (got.argmax(-1) == expected.argmax(-1)).mean() >= 0.95


@pytest.mark.parametrize("variant", ["llama", "mistral", "qwen2"])
def test_llama_cpp_tokenizes_like_transformers(variant, parity_models, tmp_path):
    from transformers import AutoTokenizer

    folder, _ = parity_models(variant)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    llm = open_llama(to_gguf(folder, tmp_path / "tok.gguf", "f16"))
    texts = [
        "the quick brown fox",
        "hello there, the other fox!",
        "caf\u00e9 \u20ac 12 \u65e5\u672c\n\nnew line",
        "  two",
    ]
    for text in texts:
        expected = tokenizer.encode(text, add_special_tokens=False)
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == expected, (variant, text)
    if model_type_of(variant) == "llama":  # the chatml markers are single control tokens
        text = "<|im_start|>user\nhi<|im_end|>"
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == tokenizer.encode(text)


def test_k_quant_through_llama_cpp(parity_models, tmp_path):
    from gguf import GGUFReader

    folder, model = parity_models("llama")
    f16 = to_gguf(folder, tmp_path / "m-f16.gguf", "f16")
    q4 = quantize_gguf(f16, tmp_path / "m-q4_k_m.gguf", "q4_k_m")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert int(GGUFReader(str(q4)).fields["general.file_type"].contents()) == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert q4.stat().st_size < f16.stat().st_size
    ids = _token_ids(model.config.vocab_size, 32)
    expected, got = hf_logits(model, ids), llama_logits(open_llama(q4), ids)
    # 4-5 bit weights of a random model: the logits keep their shape, not their exact values.
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.9


def test_q8_0_is_bit_identical_to_llama_cpp_quantizer(parity_models, tmp_path):
    import ctypes

    from gguf import GGUFReader

    folder, _ = parity_models("qwen2")
    ours = to_gguf(folder, tmp_path / "ours-q8_0.gguf", "q8_0")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    f32 = to_gguf(folder, tmp_path / "m-f32.gguf", "f32")
    assert (
        llama_cpp.llama_model_quantize(str(f32).encode(), str(tmp_path / "ref.gguf").encode(), ctypes.byref(params))
        == 0
    )
    reference = {t.name: t for t in GGUFReader(str(tmp_path / "ref.gguf")).tensors}
    for tensor in GGUFReader(str(ours)).tensors:
        assert tensor.tensor_type == reference[tensor.name].tensor_type, tensor.name
        assert np.array_equal(tensor.data, reference[tensor.name].data), tensor.name


def test_vocab_from_sentencepiece_model_file(tmp_path):
    """With `sentencepiece` installed, tokenizer.model is read directly (scores as SentencePiece has them)."""
    import json

    sentencepiece = pytest.importorskip("sentencepiece")
    from gguf_support import randomize_weights, read_fields, tiny_config
    from transformers import AutoModelForCausalLM, AutoTokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. hello there, the other fox!\n" * 50)
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(tmp_path / "sp"),
        vocab_size=300,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "tokenizer.model").write_bytes((tmp_path / "sp.model").read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_config(tiny_config("mistral", tokenizer))
    randomize_weights(model, norm_center=1.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    out = to_gguf(folder, tmp_path / "sp.gguf", "f32")

    fields = read_fields(out)
    processor = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
    assert fields["tokenizer.ggml.model"] == "llama"
    assert fields["tokenizer.ggml.scores"][:300] == pytest.approx([processor.GetScore(i) for i in range(300)])
    llm = open_llama(out)
    for text in ("the quick brown fox", "hello there, the other fox!", "caf\u00e9 12\n\nnew line"):
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == tokenizer.encode(
            text, add_special_tokens=False
        )


def test_byte_vocabulary_without_merges_loads_and_tokenizes_alike(tmp_path):
    """The shared tiny test tokenizer has no merges at all; llama.cpp still needs the (empty) merges key."""
    from templates_support import make_tokenizer
    from transformers import AutoTokenizer

    tokenizer = make_tokenizer(bos="<|im_start|>", eos="<|im_end|>", pad="<|im_end|>")
    folder = make_tiny_model(tmp_path / "bytes", "llama", tokenizer=tokenizer)
    llm = open_llama(to_gguf(folder, tmp_path / "bytes.gguf", "f16"))
    reloaded = AutoTokenizer.from_pretrained(folder)
    for text in ("hello world", "<|im_start|>user\ncaf\u00e9 12<|im_end|>"):
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == reloaded.encode(
            text, add_special_tokens=False
        )
