"""The advisor proposes, these rules dispose: every plan proposal is checked before it reaches forge.yaml.

In order: every number within the answer schema's bounds; the model one of the candidates; QLoRA
only with CUDA; the precision hardware.precision decided; max_length within the model's context; memory within
the budget with margin (else, in turn: smaller micro-batch with more accumulation, gradient
checkpointing, shorter max_length, a lighter method; on several GPUs memory is per GPU for the strategy
planning/distributed.py chooses, CPU offload taken before the moves that cost quality); a learning rate
in range for the method and the model's size. Each correction keeps the proposed value and the reason,
for the section's rationale.
The user's flags (``fixed``) are never changed: when they cannot work, a ForgeError says so.
Warnings, not corrections: a model without a chat template, an architecture GGUF export cannot write.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from forgellm.advisor.rules_plan import MemoryBudget, learning_rate_for, learning_rate_range
from forgellm.advisor.schemas import PlanProposal
from forgellm.errors import ErrorCode, ForgeError
from forgellm.hardware.memory import GIB, MEMORY_LADDER, MemoryEstimate, estimate_training_memory, lighter_method
from forgellm.models.architectures import gguf_exportable
from forgellm.models.lengths import shorter_max_length
from forgellm.planning.candidates import ModelTarget
from forgellm.planning.distributed import Distribution, GpuSetting

# Proposal field -> forge.yaml key, for corrections and overrides.
YAML_KEYS = {
    "model": "model.ref",
    "max_length": "model.max_length",
    "lora_r": "training.lora.r",
    "lora_alpha": "training.lora.alpha",
    "lora_dropout": "training.lora.dropout",
    "lora_targets": "training.lora.target_modules",
}


def yaml_key(name: str) -> str:
    return YAML_KEYS.get(name, f"training.{name}")


@dataclass(frozen=True)
class Correction:
    field: str  # proposal field name
    proposed: Any
    value: Any
    reason: str

    @property
    def key(self) -> str:
        return yaml_key(self.field)

    @property
    def section(self) -> str:
        return self.key.split(".")[0]

    def sentence(self) -> str:
        return f"advisor proposed {self.field} {_show(self.proposed)}; corrected to {_show(self.value)}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "proposed": self.proposed, "value": self.value, "reason": self.reason}


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass
class GuardContext:
    candidates: dict[str, dict[str, Any]]  # key -> candidate entry
    rules: PlanProposal  # the offline rules' answer to the same request
    budget: MemoryBudget
    fixed: dict[str, Any]  # the user's flags, by proposal field name
    target_of: Callable[[str], ModelTarget]
    p90_tokens: float | None = None
    stage: str = "sft"
    precision_reason: str | None = None  # why budget.precision (hardware.precision's decision)
    gpus: GpuSetting | None = None  # several GPUs to spread training over; None = one device


@dataclass
class CheckedPlan:
    proposal: PlanProposal
    target: ModelTarget
    memory: MemoryEstimate
    budget: MemoryBudget
    corrections: list[Correction] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    template_fallback: str | None = None  # set model.chat_template.name to this
    distribution: Distribution | None = None  # the strategy over several GPUs and its per-GPU memory


def check_proposal(proposal: PlanProposal, ctx: GuardContext) -> CheckedPlan:
    """The proposal made safe for this machine, with every change explained."""
    values = dict(proposal.__dict__)  # works for unvalidated (model_construct) answers too
    corrections: list[Correction] = []
    _check_bounds(values, ctx, corrections)
    _check_model(values, ctx, corrections)
    target = ctx.target_of(values["model"])
    _check_method(values, ctx, corrections)
    _check_precision(values, ctx, corrections)
    _check_length(values, target, corrections)
    memory = _fit_memory(values, target, ctx, corrections)
    _check_learning_rate(values, target, ctx, corrections)
    warnings, fallback = _template_warnings(target, ctx.stage)
    warnings += gguf_warnings(target)
    final = PlanProposal.model_validate(values)
    distribution = _distribution(values, target, ctx)
    return CheckedPlan(final, target, memory, ctx.budget, corrections, warnings, fallback, distribution)


def _correct(values: dict[str, Any], name: str, value: Any, reason: str, corrections: list[Correction]) -> None:
    corrections.append(Correction(name, values.get(name), value, reason))
    values[name] = value
    if name == "method":
        values["why_method"] = ""  # it argued for the old method; the correction says why this one


def _check_bounds(values: dict[str, Any], ctx: GuardContext, corrections: list[Correction]) -> None:
    """Each field alone must pass the answer schema; a field that does not takes the rules' value."""
    reference = ctx.rules.model_dump()
    for name in PlanProposal.model_fields:
        if name not in values or values[name] == reference[name]:
            continue
        try:
            PlanProposal.model_validate({**reference, name: values[name]})
        except ValidationError as exc:
            message = exc.errors()[0]["msg"]
            _correct(values, name, reference[name], f"outside the allowed range ({message}).", corrections)
    if values.get("epochs") is None and values.get("max_steps") is None:
        _correct(values, "epochs", ctx.rules.epochs, "a plan needs epochs or max_steps.", corrections)


def _check_model(values: dict[str, Any], ctx: GuardContext, corrections: list[Correction]) -> None:
    if values["model"] in ctx.candidates:
        return
    reason = (
        f"'{values['model']}' is not among the models that fit this machine "
        f"({', '.join(sorted(ctx.candidates))}); the rules' choice is used."
    )
    _correct(values, "model", ctx.rules.model, reason, corrections)
    values["why_model"] = ctx.rules.why_model  # the advisor's reasons were about another model


def _check_method(values: dict[str, Any], ctx: GuardContext, corrections: list[Correction]) -> None:
    if values["method"] != "qlora" or ctx.budget.device == "cuda":
        return
    if "method" in ctx.fixed:
        raise ForgeError(
            "QLoRA needs an NVIDIA GPU with CUDA (bitsandbytes 4-bit kernels); this machine has none.",
            fix="Use --method lora (or leave --method out and let the plan choose).",
            code=ErrorCode.HARDWARE_UNSUPPORTED,
        )
    _correct(values, "method", "lora", "QLoRA needs an NVIDIA GPU with CUDA; this machine has none.", corrections)


def _check_precision(values: dict[str, Any], ctx: GuardContext, corrections: list[Correction]) -> None:
    """The precision is hardware.precision's decision, not the advisor's: written explicitly."""
    if values["precision"] == ctx.budget.precision:
        return
    if values["precision"] == "auto":
        values["precision"] = ctx.budget.precision
        return
    _correct(values, "precision", ctx.budget.precision, ctx.precision_reason or ctx.budget.precision, corrections)


def _check_length(values: dict[str, Any], target: ModelTarget, corrections: list[Correction]) -> None:
    if values["max_length"] > target.context_length:
        reason = f"{target.key} reads at most {target.context_length:,} tokens (its context length)."
        _correct(values, "max_length", target.context_length, reason, corrections)


def _precision_of(values: dict[str, Any], budget: MemoryBudget) -> str:
    return budget.precision if values["precision"] == "auto" else values["precision"]


def estimate_memory(values: dict[str, Any], target: ModelTarget, budget: MemoryBudget) -> MemoryEstimate:
    precision = _precision_of(values, budget)
    return estimate_training_memory(
        target.dims, method=values["method"], seq_len=values["max_length"], micro_batch=values["micro_batch_size"],
        precision=precision, lora_r=values["lora_r"], lora_targets=values["lora_targets"],
        gradient_checkpointing=values["gradient_checkpointing"], device=budget.device,
    )  # fmt: skip


# Moves that cost quality: before them, on several GPUs, the sharded states may go to CPU RAM (slower only).
_LOSSY_MOVES = ("max_length", "method", "model")


def fits(values: dict[str, Any], target: ModelTarget, ctx: GuardContext, *, offload_ok: bool = False) -> bool:
    """Whether the proposal fits with margin: one device's estimate against the budget, or on several GPUs
    the per-GPU memory of the chosen strategy (CPU offload only when ``offload_ok`` or the user set it)."""
    if ctx.gpus is None:
        return ctx.budget.fits(estimate_memory(values, target, ctx.budget).total_bytes)
    choice = ctx.gpus.choose(target.dims, values, _precision_of(values, ctx.budget))
    return choice is not None and choice.fits and (offload_ok or ctx.gpus.offload or not choice.offload)


def _distribution(values: dict[str, Any], target: ModelTarget, ctx: GuardContext) -> Distribution | None:
    if ctx.gpus is None:
        return None
    precision = _precision_of(values, ctx.budget)
    choice = ctx.gpus.choose(target.dims, values, precision)
    if choice is None:  # _fit_memory raised before this for a plan that fits nowhere
        raise _does_not_fit(values, target, ctx, estimate_memory(values, target, ctx.budget))
    return Distribution(choice, ctx.gpus.estimate(target.dims, values, precision, choice))


def _fit_memory(
    values: dict[str, Any], target: ModelTarget, ctx: GuardContext, corrections: list[Correction]
) -> MemoryEstimate:
    """Shrink what costs memory, cheapest loss first, until the estimate fits with margin."""
    budget = ctx.budget
    estimate = estimate_memory(values, target, budget)
    # The shared ladder's moves; the model itself is the advisor's choice, so "model" ends in an error.
    for move in MEMORY_LADDER:
        if move not in _LADDER_STEPS:
            continue
        if fits(values, target, ctx, offload_ok=move in _LOSSY_MOVES):
            return estimate
        _LADDER_STEPS[move](values, ctx, estimate, corrections)
        estimate = estimate_memory(values, target, budget)
    if fits(values, target, ctx, offload_ok=True):
        return estimate
    raise _does_not_fit(values, target, ctx, estimate)


def _need(estimate: MemoryEstimate, ctx: GuardContext) -> str:
    budget = ctx.budget
    need = f"needs ~{estimate.total_bytes / GIB:.1f} GiB of {budget.bytes / GIB:.1f} GiB ({budget.source})"
    if ctx.gpus is None:
        return need
    world = ctx.gpus.gpus * ctx.gpus.nodes
    return f"{need} and does not fit {world} GPUs of {ctx.gpus.gpu_bytes / GIB:.1f} GiB even sharded"


def _smaller_micro_batch(values: dict[str, Any], ctx: GuardContext, estimate: MemoryEstimate, corr: list) -> None:
    micro = values["micro_batch_size"]
    if "micro_batch_size" in ctx.fixed or micro <= 1:
        return
    effective = micro * values["gradient_accumulation"]
    target = ctx.target_of(values["model"])
    while micro > 1:
        micro = max(1, micro // 2)
        if fits({**values, "micro_batch_size": micro}, target, ctx):
            break
    accumulation = min(1024, math.ceil(effective / micro))
    reason = (
        f"micro-batch {values['micro_batch_size']} {_need(estimate, ctx)}; "
        f"accumulation {accumulation} keeps ~{effective} examples per step."
    )
    _correct(values, "micro_batch_size", micro, reason, corr)
    if accumulation != values["gradient_accumulation"]:
        values["gradient_accumulation"] = accumulation


def _checkpointing(values: dict[str, Any], ctx: GuardContext, estimate: MemoryEstimate, corr: list) -> None:
    if not values["gradient_checkpointing"]:
        reason = f"without it the plan {_need(estimate, ctx)}; recomputing activations saves most of that."
        _correct(values, "gradient_checkpointing", True, reason, corr)


def _shorter_length(values: dict[str, Any], ctx: GuardContext, estimate: MemoryEstimate, corr: list) -> None:
    length = values["max_length"]
    target = ctx.target_of(values["model"])
    while (shorter := shorter_max_length(length, ctx.p90_tokens)) < length:
        length = shorter
        if fits({**values, "max_length": length}, target, ctx, offload_ok=True):
            break
    if length != values["max_length"]:
        reason = f"max_length {values['max_length']} {_need(estimate, ctx)}; longer examples are split or cut."
        _correct(values, "max_length", length, reason, corr)


def _lighter_method(values: dict[str, Any], ctx: GuardContext, estimate: MemoryEstimate, corr: list) -> None:
    """full -> LoRA -> QLoRA (CUDA only), as far as needed."""
    if "method" in ctx.fixed:
        return
    proposed, target = values["method"], ctx.target_of(values["model"])
    method = proposed
    while lighter := lighter_method(method, ctx.budget.device):
        method = lighter
        if fits({**values, "method": method}, target, ctx, offload_ok=True):
            break
    if method != proposed:
        _correct(values, "method", method, f"{proposed} {_need(estimate, ctx)}.", corr)


_LADDER_STEPS = {
    "micro_batch_size": _smaller_micro_batch,
    "gradient_checkpointing": _checkpointing,
    "max_length": _shorter_length,
    "method": _lighter_method,
}


def _does_not_fit(
    values: dict[str, Any], target: ModelTarget, ctx: GuardContext, estimate: MemoryEstimate
) -> ForgeError:
    yours = [f"--{'batch-size' if k == 'micro_batch_size' else k.replace('_', '-')}" for k in ctx.fixed]
    hint = f"Drop {' / '.join(yours)} so the plan can adapt, or choose" if yours else "Choose"
    return ForgeError(
        f"Training {target.key} with {values['method']} {_need(estimate, ctx)} even with micro-batch "
        f"{values['micro_batch_size']}, gradient checkpointing and max_length {values['max_length']}.",
        fix=f"{hint} a smaller model (see `forge models`), or free memory.",
        code=ErrorCode.MEMORY_INSUFFICIENT,
    )


def _check_learning_rate(values: dict[str, Any], target: ModelTarget, ctx: GuardContext, corr: list) -> None:
    budget = ctx.budget
    low, high = learning_rate_range(target.params, values["method"], budget.precision, budget.device)
    lr = values["learning_rate"]
    if low <= lr <= high:
        return
    good, why = learning_rate_for(target.params, values["method"], budget.precision, budget.device)
    size = f"{target.params / 1e6:,.0f}M-parameter model"
    reason = f"{values['method']} on a {size} trains well between {low:g} and {high:g}. {why}"
    _correct(values, "learning_rate", good, reason, corr)


def _template_warnings(target: ModelTarget, stage: str) -> tuple[list[str], str | None]:
    """Conversations need a chat template: the catalog's, or the tokenizer's own."""
    if stage == "cpt" or target.chat_template is not None:
        return [], None
    if target.folder is None:
        return [f"{target.ref} is not in the catalog: its chat template is checked when `forge prepare` "
                "loads its tokenizer (set model.chat_template.name if it has none)."], None  # fmt: skip
    if (target.folder / "chat_template.jinja").is_file() or _config_has_template(target.folder):
        return [], None
    return [f"{target.ref} has no chat template (a base model?); conversations will use chatml "
            "(model.chat_template.name), which training teaches it."], "chatml"  # fmt: skip


def _config_has_template(folder: Any) -> bool:
    try:
        data = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and bool(data.get("chat_template"))


def gguf_warnings(target: ModelTarget) -> list[str]:
    """A warning exactly when the GGUF converter cannot write this architecture."""
    if gguf_exportable(target.architecture):
        return []
    return [
        f"GGUF export (llama.cpp, Ollama) does not support the architecture '{target.architecture or 'unknown'}' "
        f"of {target.key}: training works, but `forge export` will only write safetensors."
    ]
