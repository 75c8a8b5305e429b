"""The model the worker trains: loaded at the chosen precision, wrapped for LoRA/QLoRA or left whole.

The precision comes from hardware/precision.py (``auto``: bf16 where the GPU supports it, fp16 on
older GPUs; on a CPU the one `forge plan` measured faster, else fp32). With
bf16/fp16 the frozen base weights are stored in that type and the forward runs under autocast; the
weights that train (LoRA adapters, or all weights for ``full``) stay fp32 so small updates are not
rounded away.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgellm.config.schema import TrainingSection
from forgellm.errors import ErrorCode, ForgeError, cause


@dataclass
class TrainableModel:
    model: Any  # a transformers PreTrainedModel, or a peft PeftModel around one
    tokenizer: Any
    device: Any  # torch.device
    precision: str  # bf16 | fp16 | fp32: what the forward computes in
    method: str
    trainable_params: int
    total_params: int
    warnings: list[str] = field(default_factory=list)

    @property
    def is_adapter(self) -> bool:
        return self.method in ("lora", "qlora")

    def autocast(self):
        """The autocast context of a forward pass (a no-op in fp32)."""
        import contextlib

        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def mask_dtype(self):
        """What a packed batch's 4D mask must be for this model: bool for SDPA, additive float for eager."""
        import torch

        implementation = getattr(self.model.config, "_attn_implementation", "sdpa")
        if implementation == "eager":
            return torch.float32 if self.precision == "fp32" else _torch_dtype(self.precision)
        return None


def pick_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(requested: str, device, model_key: str | None = None) -> str:
    """The precision to train in on ``device``: hardware.precision's one decision (auto: the measured or
    the rule's; forced values checked), for the device torch actually gives (a CPU build of torch on a
    GPU machine trains on the CPU)."""
    import dataclasses

    from forgellm.hardware.precision import decide_precision
    from forgellm.hardware.probe import probe_hardware
    from forgellm.models.catalog import catalog_key

    hardware = probe_hardware()
    if device.type != "cuda" and hardware.gpus:
        hardware = dataclasses.replace(hardware, gpus=())
    return decide_precision(hardware, requested, model_key=catalog_key(model_key) if model_key else None).precision


def _torch_dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def load_trainable_model(
    model_dir: Path, training: TrainingSection, *, device=None, model_key: str | None = None, load_on=None
) -> TrainableModel:
    """Load the model from a Hugging Face folder and prepare it for ``training.method``. ``device``: where
    it computes; ``load_on``: where its weights are put now, when not there (FSDP shards them later)."""
    import torch
    from transformers import AutoModelForCausalLM

    from forgellm.models.loading import load_tokenizer

    device = device or pick_device()
    precision = resolve_precision(training.precision, device, model_key)
    if training.method == "qlora" and device.type != "cuda":
        raise ForgeError(
            "training.method is qlora, which needs a CUDA GPU (bitsandbytes 4-bit); none is available.",
            fix="Use `--method lora` (or set training.method: lora in forge.yaml) on this machine.",
            code=ErrorCode.HARDWARE_UNSUPPORTED,
        )
    # Frozen weights may live in the low precision; weights that train must stay fp32.
    storage = torch.float32 if training.method == "full" else _torch_dtype(precision)
    kwargs: dict[str, Any] = {"dtype": storage}
    if training.method == "qlora":
        kwargs["quantization_config"] = _four_bit_config(precision)
        kwargs["device_map"] = {"": device.index or 0}  # each process its own GPU's copy
    tokenizer = load_tokenizer(model_dir)  # the process's one copy (plan's calibration shares it)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    except (OSError, ValueError) as exc:
        raise ForgeError(
            f"Cannot load the model at {model_dir} ({type(exc).__name__}: {exc}).",
            fix="Check that the folder holds config.json and the weights (*.safetensors).",
            code=ErrorCode.MODEL_LOAD_FAILED, data={"cause": cause(exc)},
        ) from None
    if training.method != "qlora":
        model.to(load_on or device)
    model.config.use_cache = False  # the cache is for generation; in training it only costs memory
    warnings = _apply_kernels(model, training.kernels, device)
    model = _wrap_for_method(model, training, precision)
    if training.gradient_checkpointing:
        _enable_gradient_checkpointing(model, training.method)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return TrainableModel(model, tokenizer, device, precision, training.method, trainable, total, warnings)


def _four_bit_config(precision: str):
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ForgeError(
            "training.method is qlora, which needs the bitsandbytes package; it is not installed.",
            fix="Install it (`pip install bitsandbytes`) or use `--method lora`.",
            code=ErrorCode.DEPENDENCY_MISSING, data={"package": "bitsandbytes"},
        )
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=_torch_dtype("bf16" if precision == "bf16" else "fp16"),
    )


def _wrap_for_method(model, training: TrainingSection, precision: str):
    import torch

    if training.method == "full":
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if training.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=training.gradient_checkpointing)
    lora = training.lora
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(training.seed)  # the adapters' initial weights come from the run's seed
    # autocast_adapter_dtype keeps the adapters in fp32 over a bf16/fp16 base.
    return get_peft_model(model, config, autocast_adapter_dtype=True)


def _enable_gradient_checkpointing(model, method: str) -> None:
    # Non-reentrant checkpointing works with frozen inputs; input grads are still enabled for peft,
    # whose frozen embeddings would otherwise cut the graph for the reentrant variant.
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.20 renamed it
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if method in ("lora", "qlora"):
        model.enable_input_require_grads()


def _apply_kernels(model, kernels: str, device) -> list[str]:
    """Optional fused kernels: applied only on CUDA when installed; otherwise a warning, never an error."""
    if kernels == "none":
        return []
    if device.type != "cuda":
        return [f"training.kernels is {kernels}, but kernels only apply on a CUDA GPU; training without them."]
    if kernels == "unsloth":
        return ["training.kernels unsloth needs Unsloth's own model loading, which Forge does not use; "
                "training without it (liger works with Forge)."]
    if importlib.util.find_spec("liger_kernel") is None:
        return ["training.kernels is liger, but liger-kernel is not installed (`pip install liger-kernel`); "
                "training without it."]
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    _apply_liger_kernel_to_instance(model=model)
    return []


def save_weights(trainable: TrainableModel, folder: Path, state: dict[str, Any] | None = None) -> None:
    """Adapter (peft) or full weights plus the tokenizer, in Hugging Face layout. ``state``: the full
    weights gathered from a sharded model (parallel.py), keyed as the model's own state_dict."""
    extra = {"state_dict": state} if state is not None else {}
    trainable.model.save_pretrained(str(folder), safe_serialization=True, **extra)
    trainable.tokenizer.save_pretrained(str(folder))


def load_weights(trainable: TrainableModel, folder: Path) -> None:
    """Put weights saved by ``save_weights`` back into the live model (resume)."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no weights in {folder}")
    if trainable.is_adapter:
        from peft import set_peft_model_state_dict

        state = load_file(str(folder / "adapter_model.safetensors"), device=str(trainable.device))
        result = set_peft_model_state_dict(trainable.model, state)
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"adapter weights do not match the model: {result.unexpected_keys[:3]}")
        return
    state: dict[str, Any] = {}
    for file in files:
        state.update(load_file(str(file), device=str(trainable.device)))
    missing, unexpected = trainable.model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:  # lm_head is absent when tied
        raise ValueError(f"weights do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")


def trainable_state(trainable: TrainableModel) -> dict[str, Any]:
    """The trained tensors by name (adapter weights, or every weight): what resume must restore exactly."""
    return {n: p.detach().clone() for n, p in trainable.model.named_parameters() if p.requires_grad}
