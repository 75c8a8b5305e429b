"""The offline planning rules: goal + data profile + hardware + candidate models -> a PlanProposal.

Good enough on their own, and the reference every other advisor's answer is checked against:
the planning guards correct a remote proposal to these values, so each rule lives here once.

Model: a CPU-only or offline machine gets the bundled `smollm2-135m` (anything bigger trains for
hours). Otherwise the goal's words pick a family order (support / several languages -> Qwen, code
-> Llama or Phi, reasoning -> Phi or Llama, small / edge / testing -> SmolLM or TinyLlama, anything
else -> Qwen) and the largest model of the first family that fits is taken: permissive licences
first, LoRA before QLoRA at equal size.

Hyper-parameters: LoRA by default; full fine-tuning only on a GPU for models under 1B parameters
that leave half the memory free; QLoRA (CUDA) when LoRA does not fit. The precision is decided once
(hardware/precision.py) and the learning rate is keyed on it: models under 500M parameters diverge at
the usual LoRA rates (1e-4..2e-4) in fp16/bf16 on a GPU, where that was observed, so they get 1e-5
there; on a CPU (fp32, or bf16 autocast with fp32 adapters) they train at SMALL_LORA_LR, measured on
the bundled model (NaN healing halves it if a run ever diverges). A rate that cannot move the model in
the planned steps is raised (learning_rate_moves), and so is a small model's LoRA rate in a short run
(learning_rate_total_for: measured, a short run at 4e-4 learned half as much). LoRA dropout 0 (it costs
~15% of a CPU step and short runs do not overfit) except on under 1,000 rows, seen several times.
Micro-batch: the largest power of two up to 16 (4 on a CPU, which is compute-bound already) that fits with
a 15% margin; accumulation up to an effective batch of ~16.
max_length: models/lengths.py's rule (the token p99 rounded up to a multiple of 64, at least 256,
capped by the model's context).
Epochs from data size: 3 under 1,000 rows, 2 under 10,000, else 1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from forgellm.advisor.schemas import PlanProposal, PlanRequest
from forgellm.hardware.memory import GIB, TIGHT_ABOVE, estimate_training_memory
from forgellm.models.dims import ModelDims
from forgellm.models.lengths import max_length_for

BUNDLED_MODEL = "smollm2-135m"
USER_CHOICE = "your choice (--model)"  # also marks, in forge.yaml's model rationale, a model to keep
SMALL_MODEL_PARAMS = 500_000_000  # below this, LoRA at 1e-4+ diverges in fp16/bf16 on GPUs (the known issue)
SMALL_LORA_LR = 4e-4
SMALL_LORA_EVIDENCE = "65 steps of 4 examples (5 minutes, bf16 autocast) took the held-out loss from 1.849 to 1.246"
# Adam moves each weight by about the learning rate per step, and LoRA's B matrices start at zero: the
# sum of the rates over a run bounds how far the model can move. Measured on SmolLM2-135M LoRA (CPU,
# support data): 1e-5 x 10 steps (1e-4) left the held-out loss unchanged (-0.1%), 4e-4 x 16 steps
# (6.4e-3) lowered it by 12%. Below 2e-3 a run is wasted time.
MIN_LR_TOTAL = 2e-3
# A short run at the small-LoRA rate stops well short of what the rate reaches in a longer one. Measured on
# SmolLM2-135M LoRA r4 (CPU, fp32 and bf16 autocast, the demo's support data, held-out test split): 4e-4 x 65
# steps (total 2.6e-2) -> test loss -32.6%, stop rate 78% -> 100%; 4e-4 x 25 steps (1e-2) -> -15.4%, stop
# rate 72% -> 72%; 1e-3 x 25 steps (2.5e-2) -> -28.0%, stop rate 72% -> 97%, general-text loss +2.2%. So a
# short run of a small model's LoRA that sees each example at most once gets the rate that makes its sum
# SHORT_RUN_LR_TOTAL (learning_rate_total_for).
SHORT_RUN_LR_TOTAL = 2.5e-2
SHORT_RUN_EVIDENCE = "25 steps of SmolLM2-135M LoRA lowered the held-out loss by 28% at 1e-3 and by 15% at 4e-4"
FULL_FT_MAX_PARAMS = 1_000_000_000
EFFECTIVE_BATCH = 16
MAX_MICRO_BATCH = 16
# A CPU is compute-bound already at a few sequences: a bigger micro-batch costs memory, not time.
MAX_MICRO_BATCH_CPU = 4
NON_COMMERCIAL_LICENCES = ("qwen-research",)
SMALL_INTENT_MAX_PARAMS = 1_200_000_000  # "small / edge / testing" means at most TinyLlama's size

# Words (several languages) that reveal what the goal is about; checked as word prefixes.
# fmt: off
_INTENT_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "tiny", "edge", "mobile", "phone", "raspberry", "embedded", "testing", "smoke test",
              "quick", "prototype", "petit", "klein", "pequeñ", "小型", "軽量"),
    "code": ("code", "coding", "program", "python", "javascript", "typescript", "sql", "function call", "tool",
             "api", "developer", "código", "programm", "コード", "代码"),
    "reasoning": ("reason", "math", "logic", "proof", "puzzle", "step by step", "razon", "raison", "推論", "推理"),
    "multilingual": ("multilingual", "translat", "language", "languages", "idioma", "langue", "sprach", "翻訳",
                     "多言語", "翻译"),
    "support": ("support", "customer", "client", "helpdesk", "help desk", "service", "ticket", "faq", "soporte",
                "assistance", "kunde", "atención", "サポート", "問い合わせ", "客服", "客户"),
}
# fmt: on
# Most specific first: "a small support bot for phones" is about size before topic.
_INTENT_ORDER = ("small", "code", "reasoning", "multilingual", "support")
_FAMILIES: dict[str, tuple[str, ...]] = {
    "small": ("smollm2", "tinyllama", "qwen2.5"),
    "code": ("llama3", "phi3", "qwen2.5"),
    "reasoning": ("phi3", "llama3", "qwen2.5"),
    "multilingual": ("qwen2.5", "llama3", "gemma2"),
    "support": ("qwen2.5", "llama3", "smollm2"),
    "general": ("qwen2.5", "llama3", "smollm2"),
}


@dataclass(frozen=True)
class MemoryBudget:
    """The memory a plan may use: the largest GPU's VRAM, else the RAM available now."""

    bytes: int
    device: str  # "cuda" | "cpu"
    source: str
    precision: str  # "bf16" | "fp16" | "fp32": hardware.precision's decision

    @classmethod
    def from_hardware(cls, hardware: dict[str, Any], precision: str | None = None) -> MemoryBudget:
        """From ``HardwareInfo.to_dict()`` (what a PlanRequest carries) and the precision decision
        (default: the rule's, before any measurement)."""
        gpus = hardware.get("gpus") or []
        precision = precision or hardware.get("preferred_precision") or "fp32"
        if gpus:
            gpu = max(gpus, key=lambda g: g["vram_total_bytes"])
            return cls(int(gpu["vram_total_bytes"]), "cuda", f"GPU {gpu['index']} ({gpu['name']})", precision)
        return cls(int(hardware.get("ram_available_bytes") or 0), "cpu", "available RAM", precision)

    def fits(self, total_bytes: int) -> bool:
        return total_bytes <= TIGHT_ABOVE * self.bytes


def dims_of(candidate: dict[str, Any]) -> ModelDims:
    return ModelDims(**candidate["dims"])


def goal_intents(goal: str, languages: list[str] | None = None) -> list[str]:
    """What the goal asks for, most specific first. A goal or data in a language other than English
    adds 'multilingual' (as the first intent when nothing else was recognised)."""
    from forgellm.data.study.checks import language_of

    text = goal.lower()
    found = [i for i in _INTENT_ORDER if any(_mentions(text, w) for w in _INTENT_WORDS[i])]
    # Stopword counts misread short English goals ("a" is Portuguese too): an ASCII goal counts as English.
    codes = [*(languages or ()), "en" if goal.isascii() else language_of(goal) or "en"]
    if any(code not in ("en", "latin (undetermined)") for code in codes) and "multilingual" not in found:
        found.append("multilingual")
    return found or ["general"]


def _mentions(text: str, word: str) -> bool:
    if not word.isascii():  # CJK has no spaces between words
        return word in text
    return re.search(r"\b" + re.escape(word), text) is not None


def propose_plan(request: PlanRequest) -> PlanProposal:
    """The rules' plan. Honours ``request.fixed`` (the user's flags)."""
    budget = MemoryBudget.from_hardware(request.hardware, request.precision)
    data = request.data or {}
    candidate, why_model = choose_model(request, budget)
    spec_params = int(candidate["params"])
    max_length, why_length = max_length_for(_p99(data), int(candidate["context_length"]))
    method, why_method = choose_method(candidate, budget, request.fixed.get("method"))
    lr, why_lr = learning_rate_for(spec_params, method, budget.precision, budget.device)
    rank = lora_rank_for(spec_params)
    micro, checkpointing, why_batch = batch_for(
        dims_of(candidate),
        budget,
        method=method,
        max_length=max_length,
        lora_r=rank,
        fixed_micro=request.fixed.get("micro_batch_size"),
    )
    epochs, why_epochs = epochs_for(data.get("rows"))
    epochs = request.fixed.get("epochs", epochs)
    why_hp = " ".join((why_lr, why_batch, why_length, why_epochs))
    return PlanProposal(
        model=candidate["key"],
        method=method,
        lora_r=rank,
        lora_alpha=2 * rank,
        lora_dropout=lora_dropout_for(data.get("rows")),
        lora_targets="all-linear",
        learning_rate=lr,
        lr_scheduler="cosine",
        warmup_ratio=0.05,
        epochs=epochs,
        max_steps=request.fixed.get("max_steps"),
        micro_batch_size=micro,
        gradient_accumulation=accumulation_for(micro),
        max_length=max_length,
        precision=budget.precision,  # type: ignore[arg-type]
        gradient_checkpointing=checkpointing,
        packing=True,
        why_model=why_model,
        why_method=why_method,
        why_hyperparameters=why_hp,
    )


def _p99(data: dict[str, Any]) -> float | None:
    tokens = data.get("tokens") or {}
    return tokens.get("p99")


def choose_model(request: PlanRequest, budget: MemoryBudget) -> tuple[dict[str, Any], str]:
    """(candidate, why). The user's model when fixed, else the rules above."""
    candidates = request.candidates
    if not candidates:
        raise ValueError("propose_plan needs at least one candidate model")  # the planner guarantees one
    by_key = {c["key"]: c for c in candidates}
    fixed = request.fixed.get("model")
    if fixed in by_key:
        return by_key[fixed], f"{fixed}: {USER_CHOICE}."
    data = request.data or {}
    intents = goal_intents(request.goal, [x["language"] for x in data.get("languages") or []])
    accelerated = budget.device == "cuda" or bool(request.hardware.get("mps"))
    if (not accelerated or request.offline) and BUNDLED_MODEL in by_key:
        return by_key[BUNDLED_MODEL], _why_bundled(accelerated, "multilingual" in intents)
    cap = SMALL_INTENT_MAX_PARAMS if intents[0] == "small" else None
    for family in _FAMILIES[intents[0]]:
        members = [c for c in candidates if c.get("family") == family and _trainable_method(c)]
        members = [c for c in members if cap is None or c["params"] <= cap]
        if members:
            best = max(members, key=_preference)
            return best, _why_model(best, intents[0], family)
    best = max((c for c in candidates if _trainable_method(c)), key=_preference, default=candidates[0])
    return best, f"{best['key']}: the largest model that fits this machine ({best.get('good_for', '')})."


def _why_bundled(accelerated: bool, multilingual: bool) -> str:
    if accelerated:
        why = f"{BUNDLED_MODEL}: the model hub cannot be reached (offline); the bundled SmolLM2-135M needs no download."
    else:
        why = (
            f"{BUNDLED_MODEL}: this machine has no GPU; on a CPU only a ~100M-parameter model trains in minutes "
            "rather than hours, and the bundled SmolLM2-135M works offline."
        )
    if multilingual:
        why += " It learned mostly English: for other languages a Qwen model on a GPU will answer far better."
    return why


def _trainable_method(candidate: dict[str, Any]) -> str | None:
    """LoRA where it fits, else QLoRA, else full (tiny models); None when nothing fits."""
    fit = candidate.get("fit", {})
    for method in ("lora", "qlora", "full"):
        if fit.get(method) == "fits":
            return method
    return None


def _preference(candidate: dict[str, Any]) -> tuple[bool, int, bool]:
    permissive = candidate.get("licence") not in NON_COMMERCIAL_LICENCES
    return permissive, int(candidate["params"]), _trainable_method(candidate) == "lora"


def _why_model(candidate: dict[str, Any], intent: str, family: str) -> str:
    reason = {
        "small": "you asked for something small",
        "code": "the goal is about code or tools",
        "reasoning": "the goal needs reasoning",
        "multilingual": "the goal or the data involves several languages",
        "support": "customer-support dialogue",
        "general": "a general assistant",
    }[intent]
    method = _trainable_method(candidate)
    gated = (
        " It is gated: accept its licence on the hub and log in (`hf auth login`)." if candidate.get("gated") else ""
    )
    size = "the largest of it" if intent != "small" else "the largest small one"
    return (
        f"{candidate['key']}: {reason} suits the {family} family ({candidate.get('good_for', '')}); "
        f"{size} that fits here with {method}.{gated}"
    )


def choose_method(candidate: dict[str, Any], budget: MemoryBudget, fixed: str | None = None) -> tuple[str, str]:
    """(method, why)."""
    if fixed:
        return fixed, f"{fixed}: your choice (--method)."
    fit, gib = candidate.get("fit", {}), candidate.get("memory_gib", {})
    params = int(candidate["params"])
    full_bytes = gib.get("full", math.inf) * GIB
    if budget.device == "cuda" and params < FULL_FT_MAX_PARAMS and full_bytes <= 0.5 * budget.bytes:
        return "full", (
            f"full fine-tuning: the model is small ({params / 1e6:.0f}M) and needs only ~{gib['full']:.1f} GiB "
            f"of {budget.bytes / GIB:.0f} GiB, so every weight can learn."
        )
    if fit.get("lora") == "fits":
        return "lora", "LoRA: trains small adapter matrices (a few MB) instead of every weight; fast and safe."
    if fit.get("qlora") == "fits":
        return "qlora", (
            f"QLoRA: LoRA does not fit in {budget.bytes / GIB:.0f} GiB, so the frozen weights are held in 4 bits."
        )
    if fit.get("full") == "fits":
        return "full", "full fine-tuning: the only method that fits here."
    return "lora", "LoRA: the lightest method available on this machine (memory is tight)."


def _reduced_precision_gpu(precision: str, device: str) -> bool:
    """Where the small-model divergence was observed: fp16/bf16 compute on a GPU."""
    return device == "cuda" and precision in ("bf16", "fp16")


def _small_lora_at_full_rate(params: int, method: str, precision: str, device: str) -> bool:
    """The regime SMALL_LORA_LR and SHORT_RUN_LR_TOTAL were measured in."""
    small = params < SMALL_MODEL_PARAMS
    return small and method in ("lora", "qlora") and not _reduced_precision_gpu(precision, device)


def learning_rate_for(params: int, method: str, precision: str = "fp32", device: str = "cpu") -> tuple[float, str]:
    """(lr, why), keyed on the model's size, the method and the precision actually used (see the module
    docstring)."""
    small = params < SMALL_MODEL_PARAMS
    if _small_lora_at_full_rate(params, method, precision, device):
        return SMALL_LORA_LR, (
            f"Learning rate {SMALL_LORA_LR:g} and LoRA rank 4 (training in {precision}): measured on SmolLM2-135M "
            f"LoRA on a CPU with support data, {SMALL_LORA_EVIDENCE}; the divergence known for models under 500M "
            f"parameters ({params / 1e6:.0f}M here) was seen in fp16/bf16 on GPUs only, and a NaN loss would halve "
            "the rate."
        )
    if small:
        return 1e-5, (
            f"Learning rate 1e-5 and LoRA rank 4: models under 500M parameters ({params / 1e6:.0f}M here) "
            f"diverge at the usual 1e-4..2e-4 in {precision} on a GPU."
        )
    if method == "full":
        return 1e-5, "Learning rate 1e-5: full fine-tuning moves every weight, so it needs a small step."
    if params >= 5_000_000_000:
        return 1e-4, "Learning rate 1e-4: the usual LoRA rate for 7B-class models."
    return 2e-4, "Learning rate 2e-4: the usual LoRA rate for models of this size."


def learning_rate_range(
    params: int, method: str, precision: str = "fp32", device: str = "cpu"
) -> tuple[float, float]:
    """Rates that train without diverging or crawling, for the guard on advisor proposals."""
    if method == "full" or (params < SMALL_MODEL_PARAMS and _reduced_precision_gpu(precision, device)):
        return 2e-6, 5e-5
    if params < SMALL_MODEL_PARAMS:
        return 5e-5, 2e-3
    return 2e-5, 5e-4


def learning_rate_total_for(
    params: int, method: str, precision: str = "fp32", device: str = "cpu", *, epochs: float = 1.0
) -> float:
    """The sum of the step sizes a run of ``epochs`` passes over its data should reach: SHORT_RUN_LR_TOTAL
    where that was measured (a small model's LoRA cut short by a budget, each example seen at most once; over
    repeated examples a higher rate was not measured and risks memorising them), elsewhere only MIN_LR_TOTAL
    (a rate that cannot move the model at all)."""
    if epochs <= 1.0 and _small_lora_at_full_rate(params, method, precision, device):
        return SHORT_RUN_LR_TOTAL
    return MIN_LR_TOTAL


def learning_rate_moves(learning_rate: float, steps: int) -> bool:
    """Whether ``steps`` optimizer steps at ``learning_rate`` can change the model noticeably (MIN_LR_TOTAL)."""
    return learning_rate * steps >= MIN_LR_TOTAL


def lora_dropout_for(rows: int | None) -> float:
    return 0.05 if rows is not None and rows < 1000 else 0.0


def lora_rank_for(params: int) -> int:
    return 4 if params < SMALL_MODEL_PARAMS else 16


def epochs_for(rows: int | None) -> tuple[float, str]:
    if rows is None:
        return 2.0, "2 epochs (data size unknown)."
    if rows < 1000:
        return 3.0, f"3 epochs: {rows:,} rows is little data, so it is seen three times."
    if rows < 10_000:
        return 2.0, f"2 epochs over {rows:,} rows."
    return 1.0, f"1 epoch: {rows:,} rows is plenty; more passes would mostly memorise."


def accumulation_for(micro_batch: int) -> int:
    return max(1, round(EFFECTIVE_BATCH / micro_batch))


def largest_micro_batch(
    dims: ModelDims, budget: MemoryBudget, *, method: str, max_length: int, lora_r: int, checkpointing: bool
) -> int | None:
    """The largest power of two up to 16 (4 on a CPU) that fits the budget with margin; None if even 1 fails."""
    micro = MAX_MICRO_BATCH if budget.device == "cuda" else MAX_MICRO_BATCH_CPU
    while micro >= 1:
        estimate = estimate_training_memory(
            dims, method=method, seq_len=max_length, micro_batch=micro, precision=budget.precision,
            lora_r=lora_r, gradient_checkpointing=checkpointing, device=budget.device,
        )  # fmt: skip
        if budget.fits(estimate.total_bytes):
            return micro
        micro //= 2
    return None


def batch_for(
    dims: ModelDims, budget: MemoryBudget, *, method: str, max_length: int, lora_r: int, fixed_micro: int | None
) -> tuple[int, bool, str]:
    """(micro-batch, gradient checkpointing, why). Checkpointing (~30% slower) only when it buys batch."""
    settings = dict(method=method, max_length=max_length, lora_r=lora_r)
    without = largest_micro_batch(dims, budget, checkpointing=False, **settings)
    if fixed_micro:
        checkpointing = without is None or without < fixed_micro
        return fixed_micro, checkpointing, f"Micro-batch {fixed_micro}: your choice (--batch-size)."
    if without is not None and without >= min(4, MAX_MICRO_BATCH_CPU):
        return (
            without,
            False,
            (
                f"Micro-batch {without} x accumulation {accumulation_for(without)} (effective ~{EFFECTIVE_BATCH}) fits "
                "without gradient checkpointing."
            ),
        )
    with_ckpt = largest_micro_batch(dims, budget, checkpointing=True, **settings) or 1
    return (
        with_ckpt,
        True,
        (
            f"Micro-batch {with_ckpt} x accumulation {accumulation_for(with_ckpt)} (effective ~{EFFECTIVE_BATCH}), "
            "with gradient checkpointing to save memory."
        ),
    )
