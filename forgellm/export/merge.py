"""Merge a run's LoRA adapter into its base model and write a plain Hugging Face folder.

The folder is what every other export reads (GGUF conversion, the model card, `forge inference`) and
what a user loads with nothing but `transformers`: safetensors weights, the tokenizer with the chat
template used in training baked in, and a generation config whose EOS ids stop at the end of a turn —
the usual reason a fine-tuned model "never stops" after export.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgellm.errors import ErrorCode, ForgeError, cause
from forgellm.export.source import ExportSource

if TYPE_CHECKING:
    from forgellm.templates.messages import ChatFormat

# Above this many parameters the merge keeps the base's own dtype instead of fp32: the fp32 copy of an
# 8B model alone would need 32 GB of RAM, and merging in bf16 is what peft users do anyway.
_FP32_MERGE_LIMIT = 4_000_000_000


@dataclass(frozen=True)
class MergedModel:
    folder: Path
    parameters: int
    dtype: str
    eos_token_ids: list[int]
    seconds: float


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _save_dtype(base_config: dict[str, Any]):
    import torch

    name = str(base_config.get("dtype") or base_config.get("torch_dtype") or "float32")
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(name, torch.float32)


def load_merged_model(source: ExportSource):
    """The run's weights as one plain (peft-free) model, on CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    from forgellm.models.loading import read_model_config

    _quiet()
    base_config = read_model_config(source.base_model_dir)
    save_dtype = _save_dtype(base_config)
    try:
        if not source.is_adapter:  # full fine-tuning: the checkpoint is the whole model
            return AutoModelForCausalLM.from_pretrained(str(source.weights_dir), dtype=save_dtype)
        with contextlib.redirect_stderr(io.StringIO()):
            base = AutoModelForCausalLM.from_pretrained(str(source.base_model_dir), dtype=torch.float32)
        if base.num_parameters() > _FP32_MERGE_LIMIT:
            base = base.to(save_dtype)
    except (OSError, ValueError) as exc:
        raise ForgeError(
            f"Cannot load the model to export ({type(exc).__name__}: {exc}).",
            fix="Check that the base model folder and the run's weights are complete.",
            code=ErrorCode.MODEL_LOAD_FAILED, data={"cause": cause(exc)},
        ) from None
    from peft import PeftModel

    try:
        with warnings.catch_warnings():  # peft calls a transformers API that transformers 5 deprecates
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = PeftModel.from_pretrained(base, str(source.weights_dir))
    except (RuntimeError, ValueError, KeyError) as exc:  # size mismatch, unknown modules
        raise ForgeError(
            f"The LoRA adapter in {source.weights_dir} does not fit the base model {source.base_model_dir} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]}).",
            fix="The adapter was trained on another model. Export the run it belongs to (--run ID), "
            "or point forge.yaml's model back to the model it was trained on.",
            code=ErrorCode.ADAPTER_MISMATCH, data={"cause": cause(exc)},
        ) from None
    merged = model.merge_and_unload()
    return merged.to(save_dtype)


def end_of_turn_ids(tokenizer: Any, chat_format: ChatFormat) -> list[int]:
    """Token ids that end an answer: the template's end-of-turn marker(s) and the tokenizer's EOS."""
    ids: list[int] = []
    markers = [*chat_format.stop_markers, tokenizer.eos_token or ""]
    for marker in markers:
        if not marker:
            continue
        encoded = tokenizer(marker, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1 and encoded[0] not in ids:
            ids.append(encoded[0])
    return ids


def write_merged(source: ExportSource, chat_format: ChatFormat, tokenizer: Any, folder: Path) -> MergedModel:
    """Write the merged model, tokenizer (training chat template) and generation config into `folder`."""
    import copy
    import time

    from forgellm.templates import to_hf_jinja

    started = time.perf_counter()
    model = load_merged_model(source)
    tokenizer = copy.deepcopy(tokenizer)  # the process shares the loaded one (models.loading): a copy is changed
    tokenizer.chat_template = to_hf_jinja(chat_format)
    eos_ids = end_of_turn_ids(tokenizer, chat_format)
    generation = model.generation_config
    generation.eos_token_id = eos_ids if len(eos_ids) > 1 else (eos_ids[0] if eos_ids else generation.eos_token_id)
    if tokenizer.pad_token_id is not None:
        generation.pad_token_id = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        generation.bos_token_id = tokenizer.bos_token_id
    model.config.use_cache = True  # training turned the cache off; generation needs it
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    parameters = model.num_parameters()
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return MergedModel(folder, parameters, dtype, eos_ids, time.perf_counter() - started)
