"""The models a plan may choose: catalog entries that fit this machine, and the model a user names.

A candidate is a plain dict (it goes to the advisor inside a PlanRequest): key, family, params,
context length, what it is good for, licence, whether it is available offline, the architecture dims
(for memory estimates) and a fit verdict per method at the planned sequence length, micro-batch 1.
On several GPUs a method that does not fit one GPU but fits spread over them (DDP or FSDP, without CPU
offload) "fits", with its memory per GPU and its strategy (``strategy``): sharding before a lighter
method or a smaller model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgellm.errors import ErrorCode, ForgeError, cause
from forgellm.hardware.memory import GIB, METHODS, count_params, fit_for
from forgellm.hardware.probe import HardwareInfo
from forgellm.models.catalog import ModelSpec, catalog
from forgellm.models.dims import IncompleteConfig, ModelDims, context_length_or_default, dims_from_config, text_config

if TYPE_CHECKING:
    from forgellm.planning.distributed import GpuSetting


@dataclass(frozen=True)
class ModelTarget:
    """The model a plan trains, whatever the reference: catalog alias, hub id or local folder."""

    ref: str  # what goes into model.ref
    key: str  # catalog key, or the reference itself for models outside the catalog
    display_name: str
    params: int
    dims: ModelDims
    context_length: int
    architecture: str | None  # transformers model_type
    chat_template: str | None  # the catalog's template family; None = from the tokenizer, if it has one
    family: str | None = None
    spec: ModelSpec | None = None
    folder: Path | None = None  # local HF folder, to check its tokenizer's chat template


def target_of_spec(spec: ModelSpec, ref: str | None = None) -> ModelTarget:
    return ModelTarget(
        ref=ref or spec.key, key=spec.key, display_name=spec.display_name, params=spec.params,
        dims=spec.dims, context_length=spec.context_length,
        architecture=spec.model_type, chat_template=spec.chat_template,
        family=spec.family, spec=spec,
    )  # fmt: skip


def candidate_entry(
    target: ModelTarget, hardware: HardwareInfo, seq_len: int, offline_ok: bool, gpus: GpuSetting | None = None
) -> dict[str, Any]:
    """The dict an advisor sees for one model, with a fit verdict per method (per GPU on several GPUs)."""
    seq_len = min(seq_len, target.context_length)
    fits = {m: fit_for(target.dims, hardware, m, seq_len=seq_len) for m in METHODS}
    verdicts = {m: f.verdict for m, f in fits.items()}
    memory = {m: round(f.estimate.total_bytes / GIB, 2) for m, f in fits.items()}
    strategies = {}
    for method in METHODS if gpus is not None else ():
        if verdicts[method] in ("fits", "needs GPU"):
            continue
        shape = {"method": method, "max_length": seq_len, "micro_batch_size": 1, "lora_r": 16,
                 "lora_targets": "all-linear", "gradient_checkpointing": True}  # fmt: skip
        choice = gpus.choose(target.dims, shape, hardware.preferred_precision)  # type: ignore[union-attr]
        if choice is not None and choice.fits and not choice.offload:
            verdicts[method], memory[method] = "fits", round(choice.per_gpu_bytes / GIB, 2)
            strategies[method] = choice.strategy
    spec = target.spec
    return {
        "key": target.key,
        "family": target.family,
        "display_name": target.display_name,
        "params": target.params,
        "context_length": target.context_length,
        "good_for": spec.good_for if spec else "",
        "licence": spec.licence if spec else "unknown",
        "gated": spec.gated if spec else False,
        "available_offline": offline_ok,
        "fit": verdicts,
        "memory_gib": memory,
        "dims": asdict(target.dims),
        **({"strategy": strategies} if strategies else {}),
    }


def catalog_candidates(
    hardware: HardwareInfo, seq_len: int, *, offline: bool, gpus: GpuSetting | None = None
) -> list[dict[str, Any]]:
    """Catalog models that train here with some method and margin (and, offline, that need no download)."""
    found = []
    for spec in catalog():
        offline_ok = available_offline(spec)
        if offline and not offline_ok:
            continue
        entry = candidate_entry(target_of_spec(spec), hardware, seq_len, offline_ok, gpus)
        if "fits" in entry["fit"].values():
            found.append(entry)
    return found


def largest_fitting(hardware: HardwareInfo, seq_len: int, gpus: GpuSetting | None = None) -> dict[str, Any] | None:
    """The biggest catalog model that fits with some method, for 'does not fit' messages."""
    fitting = catalog_candidates(hardware, seq_len, offline=False, gpus=gpus)
    return max(fitting, key=lambda c: c["params"], default=None)


def available_offline(spec: ModelSpec) -> bool:
    """Bundled with a package (or converted already), or in the local Hugging Face cache."""
    from forgellm.models.resolve import is_materialized, resolve_model

    try:
        source = resolve_model(spec.key)
    except ForgeError:  # the bundled package is missing and nothing is cached
        return False
    return source.kind == "bundled" or is_materialized(source)


def resolve_target(ref: str) -> ModelTarget:
    """A user's --model: catalog names (with suggestions when unknown), hub ids and local folders."""
    from forgellm.models.resolve import resolve_model

    source = resolve_model(ref)  # raises "Unknown model ... Did you mean" for misspelt names
    if source.spec is not None:
        return target_of_spec(source.spec, ref)
    if source.kind == "local" and source.path is not None:
        return _target_from_config(ref, _read_config(source.path / "config.json"), source.path)
    if source.kind == "hub" and source.hub_id:
        return _target_from_config(ref, _hub_config(source.hub_id), None)
    raise ForgeError(
        f"Forge cannot size {ref} for planning: a .gguf file outside the catalog has no config.json to read.",
        fix="Convert it first (`forge prepare` does so) and pass the converted folder, or use a catalog model.",
        code=ErrorCode.MODEL_PATH_INVALID,
    )


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ForgeError(
            f"Cannot read {path}: {exc}.",
            fix="Check the model folder.",
            code=ErrorCode.FILE_UNREADABLE,
            data={"path": str(path), "cause": cause(exc)},
        ) from None
    return data if isinstance(data, dict) else {}


def _hub_config(hub_id: str) -> dict[str, Any]:
    from huggingface_hub import hf_hub_download

    from forgellm.config.settings import offline_mode

    try:
        return _read_config(Path(hf_hub_download(hub_id, "config.json", local_files_only=offline_mode())))
    except ForgeError:
        raise
    except Exception as exc:  # offline, unknown repo, gated: one message
        raise ForgeError(
            f"Cannot read the configuration of {hub_id} ({type(exc).__name__}); Forge needs it to check memory.",
            fix="Connect to the internet (and accept the licence if the model is gated), or download the model "
            "and pass its folder with --model.",
            code=ErrorCode.MODEL_UNAVAILABLE,
            data={"model": hub_id, "cause": cause(exc)},
        ) from None


def _target_from_config(ref: str, config: dict[str, Any], folder: Path | None) -> ModelTarget:
    try:
        dims = dims_from_config(config)
    except (IncompleteConfig, TypeError, ValueError) as exc:
        raise ForgeError(
            f"The config.json of {ref} lacks the decoder sizes Forge needs ({exc}).",
            fix="Use a decoder-only language model (Llama, Qwen, Mistral, Phi, Gemma ...) or a catalog model.",
            code=ErrorCode.MODEL_UNSUPPORTED,
        ) from None
    return ModelTarget(
        ref=ref, key=ref, display_name=Path(ref).name or ref, params=count_params(dims)[0], dims=dims,
        context_length=context_length_or_default(config), architecture=text_config(config).get("model_type"),
        chat_template=None, folder=folder,
    )  # fmt: skip
