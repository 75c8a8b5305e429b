"""The HF -> GGUF converter read back with gguf's own reader: keys, tensor names, shapes, types, data, vocab."""

from __future__ import annotations

import errno
import json
import shutil
import sys

import numpy as np
import pytest
from gguf_support import VARIANTS, make_tiny_model, model_type_of, read_fields

from forgellm.errors import ForgeError
from forgellm.export.gguf_convert import check_exportable, convert_to_gguf, parse_quants
from forgellm.export.gguf_vocab import bpe_pre_name

BLOCK_TENSORS = {
    "llama": ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"],
    "phi3": ["attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down"],
}
BLOCK_TENSORS["mistral"] = BLOCK_TENSORS["gemma"] = BLOCK_TENSORS["llama"]
BLOCK_TENSORS["qwen2"] = BLOCK_TENSORS["llama"] + ["attn_q.bias", "attn_k.bias", "attn_v.bias"]
BLOCK_TENSORS["gemma2"] = BLOCK_TENSORS["llama"] + ["post_attention_norm", "post_ffw_norm"]


@pytest.fixture(scope="module")
def tiny_export_models(tmp_path_factory):
    """Factory: variant -> folder of a tiny random model (built once per module)."""
    root = tmp_path_factory.mktemp("gguf-tiny")
    built: dict = {}

    def get(variant: str):
        if variant not in built:
            built[variant] = make_tiny_model(root / variant, variant)
        return built[variant]

    return get


def _reader(path):
    from gguf import GGUFReader

    return GGUFReader(str(path))


def _hf_state(folder):
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def test_parse_quants_normalizes_and_rejects_unknown():
    assert parse_quants("F16, q8_0,f16") == ["f16", "q8_0"]
    assert parse_quants("q4_k_m") == ["q4_k_m"]
    with pytest.raises(ForgeError) as caught:
        parse_quants("f16,q3_k")
    assert "'q3_k'" in caught.value.message and "q8_0" in caught.value.fix
    with pytest.raises(ForgeError):
        parse_quants(" , ")


@pytest.mark.parametrize(
    ("model_type", "arch"),
    [
        ("llama", "llama"),
        ("mistral", "llama"),
        ("qwen2", "qwen2"),
        ("gemma", "gemma"),
        ("gemma2", "gemma2"),
        ("phi3", "phi3"),
    ],
)
def test_check_exportable_names_the_llama_cpp_architecture(model_type, arch):
    config = {
        "model_type": model_type,
        "num_attention_heads": 4,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "max_position_embeddings": 128,
        "vocab_size": 300,
    }
    assert check_exportable(config) == arch


def test_unsupported_architecture_is_refused_before_any_file_is_written(tmp_path):
    source = tmp_path / "neox"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"model_type": "gpt_neox", "hidden_size": 64}))
    with pytest.raises(ForgeError) as caught:
        check_exportable(json.loads((source / "config.json").read_text()))
    assert "gpt_neox" in caught.value.message
    for supported in ("llama", "qwen2", "gemma2", "phi3"):
        assert supported in caught.value.message
    out = tmp_path / "out"
    with pytest.raises(ForgeError):
        convert_to_gguf(source, out / "neox.gguf")
    assert not out.exists()


def test_unsupported_rope_scaling_is_refused():
    config = {
        "model_type": "qwen2",
        "num_attention_heads": 4,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "max_position_embeddings": 128,
        "vocab_size": 300,
        "rope_parameters": {"rope_type": "dynamic", "factor": 2.0},
    }
    with pytest.raises(ForgeError, match="dynamic"):
        check_exportable(config)


def test_gemma2_query_scale_llama_cpp_cannot_reproduce_is_refused():
    config = {
        "model_type": "gemma2",
        "num_attention_heads": 4,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "max_position_embeddings": 128,
        "vocab_size": 300,
        "head_dim": 16,
    }
    assert check_exportable({**config, "query_pre_attn_scalar": 16}) == "gemma2"
    with pytest.raises(ForgeError, match="query_pre_attn_scalar=256"):
        check_exportable({**config, "query_pre_attn_scalar": 256})


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_round_trip_keys_names_shapes_and_data(variant, tiny_export_models, tmp_path):
    folder = tiny_export_models(variant)
    config = json.loads((folder / "config.json").read_text())
    out = convert_to_gguf(folder, tmp_path / "model.gguf", quant="f32", chat_template="{{ messages }}")
    fields = read_fields(out)
    arch = check_exportable(config)
    assert fields["general.architecture"] == arch
    assert fields["general.file_type"] == 0
    assert fields[f"{arch}.block_count"] == 2
    assert fields[f"{arch}.embedding_length"] == 64
    assert fields[f"{arch}.attention.head_count"] == 4
    assert fields[f"{arch}.attention.head_count_kv"] == config["num_key_value_heads"]
    assert fields[f"{arch}.context_length"] == 256
    assert fields["tokenizer.chat_template"] == "{{ messages }}"

    reader = _reader(out)
    tensors = {t.name: t for t in reader.tensors}
    expected = {
        f"blk.{b}.{n}" + ("" if n.endswith(".bias") else ".weight")
        for b in range(2)
        for n in BLOCK_TENSORS[model_type_of(variant)]
    }
    expected |= {"token_embd.weight", "output_norm.weight"}
    if not config.get("tie_word_embeddings") and not variant.startswith("gemma"):
        expected.add("output.weight")
    if variant == "llama3-rope":
        expected.add("rope_freqs.weight")
    if variant == "phi3-longrope":
        expected |= {"rope_factors_long.weight", "rope_factors_short.weight"}
    assert set(tensors) == expected

    state = _hf_state(folder)
    embed = state["model.embed_tokens.weight"]
    assert np.array_equal(tensors["token_embd.weight"].data, embed)
    # The reader's shape is ggml's (fastest dimension first): the reverse of numpy's.
    assert list(tensors["token_embd.weight"].shape) == list(reversed(embed.shape))
    assert tensors["blk.0.attn_norm.weight"].tensor_type.name == "F32"
    norm = state["model.layers.0.input_layernorm.weight"]
    shift = 1.0 if variant.startswith("gemma") else 0.0  # llama.cpp multiplies by w, HF Gemma by (1 + w)
    np.testing.assert_allclose(tensors["blk.0.attn_norm.weight"].data, norm + shift, rtol=0, atol=1e-6)
    if model_type_of(variant) != "phi3":
        _check_q_layout(variant, tensors["blk.1.attn_q.weight"].data, state["model.layers.1.self_attn.q_proj.weight"])


def _check_q_layout(variant, gguf_q, hf_q):
    if model_type_of(variant) not in ("llama", "mistral"):
        assert np.array_equal(gguf_q, hf_q)  # NEOX-style rotary in llama.cpp: no reordering
        return
    head_dim = 16
    per_head = hf_q.reshape(4, head_dim, -1)
    interleaved = np.stack([per_head[:, : head_dim // 2], per_head[:, head_dim // 2 :]], axis=2).reshape(hf_q.shape)
    assert np.array_equal(gguf_q, interleaved)


def test_architecture_specific_keys(tiny_export_models, tmp_path):
    gemma2 = read_fields(convert_to_gguf(tiny_export_models("gemma2"), tmp_path / "g2.gguf", quant="f32"))
    assert gemma2["gemma2.attn_logit_softcapping"] == pytest.approx(50.0)
    assert gemma2["gemma2.final_logit_softcapping"] == pytest.approx(30.0)
    assert gemma2["gemma2.attention.sliding_window"] == 128
    assert gemma2["gemma2.attention.key_length"] == 16
    phi3 = read_fields(convert_to_gguf(tiny_export_models("phi3"), tmp_path / "p3.gguf", quant="f32"))
    assert phi3["phi3.rope.dimension_count"] == 16
    assert phi3["phi3.rope.scaling.original_context_length"] == 256
    llama3 = read_fields(convert_to_gguf(tiny_export_models("llama3-rope"), tmp_path / "l3.gguf", quant="f32"))
    assert llama3["llama.rope.dimension_count"] == 16
    assert llama3["llama.rope.freq_base"] == pytest.approx(10000.0)


@pytest.mark.parametrize(
    ("quant", "file_type", "weight_type"), [("f16", 1, "F16"), ("bf16", 32, "BF16"), ("q8_0", 7, "Q8_0")]
)
def test_quant_types_follow_llama_cpp_rules(quant, file_type, weight_type, tiny_export_models, tmp_path):
    from gguf.quants import dequantize

    folder = tiny_export_models("qwen2")
    out = convert_to_gguf(folder, tmp_path / f"m-{quant}.gguf", quant=quant)
    assert read_fields(out)["general.file_type"] == file_type
    tensors = {t.name: t for t in _reader(out).tensors}
    assert tensors["blk.0.attn_q.weight"].tensor_type.name == weight_type
    assert tensors["token_embd.weight"].tensor_type.name == weight_type
    assert tensors["blk.0.attn_norm.weight"].tensor_type.name == "F32"  # norms and biases stay F32
    assert tensors["blk.0.attn_q.bias"].tensor_type.name == "F32"
    original = _hf_state(folder)["model.layers.0.mlp.down_proj.weight"]
    down = tensors["blk.0.ffn_down.weight"]
    restored = dequantize(down.data, down.tensor_type).reshape(original.shape)
    tolerance = {"f16": 2e-3, "bf16": 2e-2, "q8_0": 2e-2}[quant]
    np.testing.assert_allclose(restored, original, atol=tolerance * np.abs(original).max())


def test_rows_not_splitting_into_blocks_fall_back_to_f16():
    import gguf

    from forgellm.export.gguf_convert import _tensor_qtype

    kinds = gguf.GGMLQuantizationType
    assert _tensor_qtype("blk.0.ffn_up.weight", (96, 40), kinds.Q8_0) == kinds.F16
    assert _tensor_qtype("blk.0.ffn_up.weight", (96, 64), kinds.Q8_0) == kinds.Q8_0
    assert _tensor_qtype("output_norm.weight", (64,), kinds.Q8_0) == kinds.F32


def test_gpt2_vocab_special_ids_and_flags(tiny_export_models, tmp_path):
    from transformers import AutoTokenizer

    folder = tiny_export_models("llama")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    fields = read_fields(convert_to_gguf(folder, tmp_path / "v.gguf", eot_tokens=["<|not a token|>", "<|im_end|>"]))
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert len(tokens) == len(tokenizer)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokens[im_end] == "<|im_end|>" and types[im_end] == 3  # CONTROL: never split, never printed
    assert types[tokenizer.convert_tokens_to_ids("a")] == 1
    assert fields["tokenizer.ggml.bos_token_id"] == tokenizer.bos_token_id
    assert fields["tokenizer.ggml.eos_token_id"] == im_end
    assert fields["tokenizer.ggml.eot_token_id"] == im_end  # the first end-of-turn string that is one token
    assert fields["tokenizer.ggml.add_bos_token"] is False  # this tokenizer adds no BOS to plain text
    forced = read_fields(convert_to_gguf(folder, tmp_path / "b.gguf", add_bos=True))
    assert forced["tokenizer.ggml.add_bos_token"] is True


def test_sentencepiece_style_vocab_from_tokenizer_json(tiny_export_models, tmp_path):
    from transformers import AutoTokenizer

    folder = tiny_export_models("mistral")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    fields = read_fields(convert_to_gguf(folder, tmp_path / "spm.gguf", quant="f32"))
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    scores = fields["tokenizer.ggml.scores"]
    assert fields["tokenizer.ggml.model"] == "llama"
    assert tokens[0] == "<unk>" and types[0] == 2
    assert types[1] == 3 and types[2] == 3  # <s>, </s>
    assert tokens[3 + 0x41] == "<0x41>" and types[3 + 0x41] == 6  # BYTE tokens carry the byte fallback
    first_merge, later_merge = (tokenizer.convert_tokens_to_ids(p) for p in ("\u2581t", "\u2581hello"))
    assert scores[first_merge] > scores[later_merge]  # earlier merges score higher, as SentencePiece pieces do
    assert fields["tokenizer.ggml.add_bos_token"] is True
    assert fields["tokenizer.ggml.add_space_prefix"] is True


# The split regexes as Llama 3 and Qwen2 ship them in tokenizer.json.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")


def _sequence(*steps):
    return {"type": "Sequence", "pretokenizers": list(steps)}


def _split_then_bytes(regex):
    return _sequence({"type": "Split", "pattern": {"Regex": regex}}, {"type": "ByteLevel", "use_regex": False})


@pytest.mark.parametrize(
    ("pre_tokenizer", "name"),
    [
        ({"type": "ByteLevel", "use_regex": True}, "gpt-2"),
        (_sequence({"type": "Digits", "individual_digits": True}, {"type": "ByteLevel", "use_regex": True}), "smollm"),
        (_split_then_bytes(LLAMA3_SPLIT), "llama-bpe"),
        (_split_then_bytes(QWEN2_SPLIT), "qwen2"),
        (_split_then_bytes(r"\s+"), "default"),
        ({"type": "ByteLevel", "use_regex": False}, "default"),
    ],
)
def test_pre_tokenizer_name_follows_what_the_tokenizer_does(pre_tokenizer, name):
    assert bpe_pre_name({"pre_tokenizer": pre_tokenizer}) == name


def test_progress_reports_every_tensor(tiny_export_models, tmp_path):
    seen = []
    convert_to_gguf(tiny_export_models("llama"), tmp_path / "p.gguf", progress=lambda d, t: seen.append((d, t)))
    total = seen[-1][1]
    assert seen == [(i, total) for i in range(1, total + 1)]


def test_k_quants_are_not_written_directly(tiny_export_models, tmp_path):
    with pytest.raises(ForgeError, match="quantize_gguf"):
        convert_to_gguf(tiny_export_models("llama"), tmp_path / "k.gguf", quant="q4_k_m")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_while_writing_leaves_no_file(tiny_export_models, tmp_path, monkeypatch):
    import gguf

    calls = []

    def fill_disk(self, tensor, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # part of the file is already on disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, tensor, *args, **kwargs)

    original = gguf.GGUFWriter.write_tensor_data
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", fill_disk)
    out_dir = tmp_path / "exports"
    with pytest.raises(ForgeError) as caught:
        convert_to_gguf(tiny_export_models("llama"), out_dir / "m.gguf")
    assert "disk filled up" in caught.value.message and caught.value.fix
    assert list(out_dir.iterdir()) == []  # neither the GGUF nor its temporary file


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_safetensors_is_a_clear_error(damage, tiny_export_models, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_export_models("llama"), folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(b"\x00garbage" * 64 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(ForgeError) as caught:
        convert_to_gguf(folder, tmp_path / "out" / "m.gguf")
    assert "model.safetensors" in caught.value.message
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_missing_weights_is_a_clear_error(tiny_export_models, tmp_path):
    folder = tmp_path / "no-weights"
    shutil.copytree(tiny_export_models("llama"), folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ForgeError, match="safetensors"):
        convert_to_gguf(folder, tmp_path / "m.gguf")


def test_quantize_without_llama_cpp_names_the_install_command(tmp_path, monkeypatch):
    from forgellm.export.quantize import quantize_gguf

    source = tmp_path / "m-f16.gguf"
    source.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` raise ImportError
    with pytest.raises(ForgeError) as caught:
        quantize_gguf(source, tmp_path / "m-q4_k_m.gguf", "q4_k_m")
    assert "llama-cpp-python" in caught.value.message
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF" pip install' in caught.value.fix
    assert not (tmp_path / "m-q4_k_m.gguf").exists()


def test_quantize_refuses_unknown_types_and_missing_sources(tmp_path):
    from forgellm.export.quantize import quantize_gguf

    with pytest.raises(ForgeError, match="convert_to_gguf"):
        quantize_gguf(tmp_path / "m-f16.gguf", tmp_path / "m-q8_0.gguf", "q8_0")
    with pytest.raises(ForgeError, match="not found"):
        quantize_gguf(tmp_path / "missing-f16.gguf", tmp_path / "m-q4_k_m.gguf", "q4_k_m")
