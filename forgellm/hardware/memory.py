"""Training-memory estimator: will this model train with this method on this machine?

All quantities are bytes for one training step at peak. ``P`` is the parameter count computed from
the architecture dims (embeddings + per layer q,k,v,o + gate,up,down, + lm_head when untied; norms
and biases are ignored, < 0.1%), ``E = vocab * hidden`` the embedding matrix, ``T`` the trainable
parameter count, ``s`` seq_len, ``b`` micro_batch, ``h`` hidden, ``i`` intermediate, ``L`` layers,
``w`` = 2 bytes for bf16/fp16 and 4 for fp32.

weights      full, lora: P * w.
             qlora: linear weights in NF4 at 4.127 bits = 0.516 bytes/param (4-bit codes + double-
             quantised absmax, Dettmers et al. 2023, QLoRA §2), embeddings / lm_head kept at w.
             lora, qlora: + T * 4 (PEFT keeps adapter weights in fp32).
trainable    full: P. lora, qlora: r * (d_in + d_out) for each targeted linear, times L;
             "all-linear" = q,k,v,o,gate,up,down, "attention" = q,k,v,o.
gradients    T * 4 (fp32).
optimizer    AdamW, two fp32 moments: T * 8; full fine-tuning in bf16/fp16 adds an fp32 master
             copy: + T * 4 (mixed-precision accounting of Rajbhandari et al. 2020, ZeRO §3.1).
activations  a = 2 bytes (bf16/fp16 autocast) or 4 (fp32) per saved element.
             Saved elements per token per layer: 8h + 4i. This is Korthikanti et al. 2022
             ("Reducing Activation Recomputation", eq. 1: 34*s*b*h + 5*a*s^2*b bytes per layer)
             adapted to today's decoders: SDPA / flash attention keeps no s x s score matrix (no s^2
             term), fine-tuning runs without dropout masks, and the GeLU MLP of width 4h becomes a
             SwiGLU MLP of width i (gate, up, act, product saved: 4i).
             no checkpointing:   s * b * a * L * (8h + 4i)
             checkpointing:      s * b * a * (L * h + 8h + 4i)   (each layer's input is kept, and
                                 one layer at a time is recomputed during the backward pass)
logits       s * b * vocab * 4 * 2: fp32 logits plus the same again for softmax / their gradient.
overhead     10% of the sum above for allocator fragmentation, + 0.75 GiB CUDA context on a GPU,
             or + 0.4 GiB for the framework itself on CPU.
total        weights + gradients + optimizer + activations + logits + overhead.

Verdicts (``fit_for``): the budget is the total VRAM of the largest GPU, else the RAM available now
(CPU training). "fits" up to 85% of the budget, "tight" above, "no" above 100%; QLoRA without an
NVIDIA GPU is "needs GPU" (bitsandbytes 4-bit kernels are CUDA-only).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, Union

from forgellm.errors import ErrorCode, ForgeError
from forgellm.hardware.disk import BYTES_PER_PARAM, bytes_per_param
from forgellm.hardware.probe import HardwareInfo
from forgellm.models.dims import ModelDims

if TYPE_CHECKING:
    from forgellm.models.catalog import ModelSpec

Method = Literal["lora", "qlora", "full"]
Precision = Literal["bf16", "fp16", "fp32"]
LoraTargets = Literal["all-linear", "attention"]
Device = Literal["cuda", "cpu"]
Verdict = Literal["fits", "tight", "no", "needs GPU"]
SizedModel = Union[ModelDims, "ModelSpec"]  # what the estimator reads dims from

METHODS = ("lora", "qlora", "full")
PRECISIONS = ("bf16", "fp16", "fp32")
LORA_TARGETS = ("all-linear", "attention")
DEVICES = ("cuda", "cpu")

GIB = 2**30
NF4_BYTES_PER_PARAM = BYTES_PER_PARAM["nf4"]
ADAPTER_BYTES = 4
GRAD_BYTES = 4
ADAM_BYTES = 8
MASTER_BYTES = 4
LOGITS_BYTES = 4
LOGITS_COPIES = 2
ACT_ELEMENTS_H = 8  # per token per layer, times hidden
ACT_ELEMENTS_I = 4  # per token per layer, times intermediate
FRAGMENTATION = 0.10
CUDA_CONTEXT_BYTES = int(0.75 * GIB)
CPU_FRAMEWORK_BYTES = int(0.4 * GIB)
TIGHT_ABOVE = 0.85
# The moves that save training memory, cheapest loss first (the forge.yaml field each one changes):
# fewer examples at once with more accumulation (same effective batch), recomputing activations,
# shorter examples, a lighter method, a smaller model. The plan guards apply them until a proposal
# fits; the failure diagnosis proposes the next one after an out-of-memory crash.
MEMORY_LADDER = ("micro_batch_size", "gradient_checkpointing", "max_length", "method", "model")
_LIGHTER_METHOD = {"full": "lora", "lora": "qlora"}


def dims_of(model: SizedModel) -> ModelDims:
    """The ModelDims of a catalog ModelSpec, or the dims themselves."""
    return getattr(model, "dims", model)


@dataclass(frozen=True)
class MemoryEstimate:
    method: Method
    precision: Precision
    device: Device
    seq_len: int
    micro_batch: int
    gradient_checkpointing: bool
    total_params: int
    trainable_params: int
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    logits_bytes: int
    overhead_bytes: int
    total_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Fit:
    model: str  # catalog key, or "custom" for bare dims
    method: Method
    verdict: Verdict
    reason: str
    budget_bytes: int
    budget_source: str  # "GPU 0 (NVIDIA GeForce RTX 4090)" or "available RAM"
    estimate: MemoryEstimate

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["estimate"] = self.estimate.to_dict()
        return data


@dataclass(frozen=True)
class FitRow:
    """One line of `forge models`: a catalog model and its verdict for each method."""

    model: str
    display_name: str
    params: int
    lora: Fit
    qlora: Fit
    full: Fit

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "display_name": self.display_name,
            "params": self.params,
            **{m: getattr(self, m).to_dict() for m in METHODS},
        }


@dataclass(frozen=True)
class _Linears:
    """(d_in, d_out) of each linear in one decoder layer."""

    attention: tuple[tuple[int, int], ...]
    mlp: tuple[tuple[int, int], ...]


def _linears(model: SizedModel) -> _Linears:
    dims = dims_of(model)
    h, i = dims.hidden_size, dims.intermediate_size
    head_dim = dims.head_dim or h // dims.n_heads
    q, kv = dims.n_heads * head_dim, dims.n_kv_heads * head_dim
    return _Linears(attention=((h, q), (h, kv), (h, kv), (q, h)), mlp=((h, i), (h, i), (i, h)))


def count_params(model: SizedModel) -> tuple[int, int]:
    """(total, embedding-side) parameters; embedding-side is embeddings plus an untied lm_head."""
    dims = dims_of(model)
    layer = _linears(dims)
    per_layer = sum(a * b for a, b in (*layer.attention, *layer.mlp))
    embedding_side = dims.vocab_size * dims.hidden_size * (1 if dims.tied_embeddings else 2)
    return embedding_side + dims.n_layers * per_layer, embedding_side


def lora_trainable_params(model: SizedModel, r: int, targets: LoraTargets) -> int:
    """r * (d_in + d_out) per adapted linear (LoRA's A and B matrices), over all layers."""
    dims = dims_of(model)
    layer = _linears(dims)
    modules = layer.attention + (layer.mlp if targets == "all-linear" else ())
    return dims.n_layers * sum(r * (a + b) for a, b in modules)


def estimate_training_memory(
    spec_or_dims: SizedModel,
    *,
    method: Method,
    seq_len: int,
    micro_batch: int,
    precision: Precision,
    lora_r: int = 16,
    lora_targets: LoraTargets = "all-linear",
    gradient_checkpointing: bool = True,
    device: Device = "cuda",
) -> MemoryEstimate:
    """Peak training memory by the formula in this module's docstring."""
    _check_settings(method, precision, lora_targets, device, seq_len, micro_batch, lora_r)
    dims = dims_of(spec_or_dims)
    total, embedding_side = count_params(dims)
    w = int(bytes_per_param(precision))
    if method == "full":
        trainable = total
        weights = total * w
        optimizer = trainable * (ADAM_BYTES + (MASTER_BYTES if w == 2 else 0))
    else:
        trainable = lora_trainable_params(dims, lora_r, lora_targets)
        base = total * w
        if method == "qlora":
            base = (total - embedding_side) * NF4_BYTES_PER_PARAM + embedding_side * w
        weights = base + trainable * ADAPTER_BYTES
        optimizer = trainable * ADAM_BYTES
    gradients = trainable * GRAD_BYTES

    h, i, n = dims.hidden_size, dims.intermediate_size, dims.n_layers
    per_layer = ACT_ELEMENTS_H * h + ACT_ELEMENTS_I * i
    saved = n * h + per_layer if gradient_checkpointing else n * per_layer
    activations = seq_len * micro_batch * w * saved
    logits = seq_len * micro_batch * dims.vocab_size * LOGITS_BYTES * LOGITS_COPIES

    subtotal = weights + gradients + optimizer + activations + logits
    context = CUDA_CONTEXT_BYTES if device == "cuda" else CPU_FRAMEWORK_BYTES
    overhead = subtotal * FRAGMENTATION + context
    return MemoryEstimate(
        method=method,
        precision=precision,
        device=device,
        seq_len=seq_len,
        micro_batch=micro_batch,
        gradient_checkpointing=gradient_checkpointing,
        total_params=total,
        trainable_params=trainable,
        weights_bytes=round(weights),
        gradients_bytes=gradients,
        optimizer_bytes=optimizer,
        activations_bytes=activations,
        logits_bytes=logits,
        overhead_bytes=round(overhead),
        total_bytes=round(subtotal + overhead),
    )


def _check_settings(
    method: str, precision: str, targets: str, device: str, seq_len: int, micro_batch: int, lora_r: int
) -> None:
    for name, value, allowed in (
        ("method", method, METHODS),
        ("precision", precision, PRECISIONS),
        ("lora_targets", targets, LORA_TARGETS),
        ("device", device, DEVICES),
    ):
        if value not in allowed:
            raise ForgeError(
                f"Unknown {name} {value!r}.", fix=f"Use one of: {', '.join(allowed)}.", code=ErrorCode.USAGE_INVALID
            )
    for name, number in (("seq_len", seq_len), ("micro_batch", micro_batch), ("lora_r", lora_r)):
        if not isinstance(number, int) or number < 1:
            raise ForgeError(
                f"{name} must be a whole number of at least 1, got {number!r}.", code=ErrorCode.USAGE_INVALID
            )


def fit_for(
    spec: SizedModel,
    hardware: HardwareInfo,
    method: Method,
    *,
    seq_len: int = 1024,
    micro_batch: int = 1,
    precision: Precision | None = None,
    lora_r: int = 16,
    lora_targets: LoraTargets = "all-linear",
    gradient_checkpointing: bool = True,
) -> Fit:
    """Whether ``method`` trains ``spec`` on ``hardware``; precision defaults to the hardware's preferred."""
    gpu = hardware.largest_gpu
    estimate = estimate_training_memory(
        spec,
        method=method,
        seq_len=seq_len,
        micro_batch=micro_batch,
        precision=precision or hardware.preferred_precision,
        lora_r=lora_r,
        lora_targets=lora_targets,
        gradient_checkpointing=gradient_checkpointing,
        device="cuda" if gpu is not None else "cpu",
    )
    if gpu is not None:
        budget, source = gpu.vram_total_bytes, f"GPU {gpu.index} ({gpu.name})"
    else:
        budget, source = hardware.ram_available_bytes, "available RAM"
    model = getattr(spec, "key", "custom")

    def fit(verdict: Verdict, reason: str) -> Fit:
        return Fit(model, method, verdict, reason, budget, source, estimate)

    need = f"needs ~{_gib(estimate.total_bytes)}"
    if method == "qlora" and gpu is None:
        return fit(
            "needs GPU",
            f"QLoRA needs an NVIDIA GPU with CUDA (bitsandbytes 4-bit); this machine has "
            f"{hardware.accelerator}. Use LoRA instead.",
        )
    share = estimate.total_bytes / budget if budget > 0 else float("inf")
    reason = f"{need} of {_gib(budget)} ({source}), {share:.0%}"
    if share > 1:
        return fit("no", f"{reason}; {_smaller_options(method, has_gpu=gpu is not None)}.")
    if gpu is not None and estimate.total_bytes > gpu.vram_free_bytes:
        reason += f"; only {_gib(gpu.vram_free_bytes)} free now (other processes use the GPU)"
    return fit("tight" if share > TIGHT_ABOVE else "fits", reason)


def lighter_method(method: str, device: str) -> str | None:
    """The next lighter method (full -> LoRA -> QLoRA), or None; QLoRA only where it runs (CUDA)."""
    lighter = _LIGHTER_METHOD.get(method)
    return None if lighter == "qlora" and device != "cuda" else lighter


def _smaller_options(method: Method, *, has_gpu: bool) -> str:
    # QLoRA is only worth suggesting where it can run (CUDA).
    cheaper = {"full": "LoRA or QLoRA" if has_gpu else "LoRA", "lora": "QLoRA" if has_gpu else None}
    options = [cheaper.get(method), "a shorter seq_len", "a smaller model"]
    return "try " + ", ".join(o for o in options if o)


def fit_table(
    hardware: HardwareInfo,
    *,
    seq_len: int = 1024,
    micro_batch: int = 1,
    precision: Precision | None = None,
) -> list[FitRow]:
    """A verdict per catalog model and method, for `forge models`."""
    from forgellm.models.catalog import catalog  # models sits below hardware; imported when used

    rows = []
    for spec in catalog():
        fits = {
            m: fit_for(spec, hardware, m, seq_len=seq_len, micro_batch=micro_batch, precision=precision)
            for m in METHODS
        }
        rows.append(FitRow(spec.key, spec.display_name, spec.params, **fits))
    return rows


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"
