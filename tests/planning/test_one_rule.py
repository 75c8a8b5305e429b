"""Each rule that several stages apply lives in one place: whichever stage asks, the answer is the same.

max_length (models/lengths.py), the context length and dims of a config (models/dims.py), the GGUF
architectures (models/architectures.py), the memory ladder (hardware/memory.py), bytes per parameter,
the free-space check and the disk-full pattern (hardware/disk.py).
"""

from __future__ import annotations

import errno
import shutil
from types import SimpleNamespace

import pytest

from forgellm.advisor import diagnosis, rules_plan
from forgellm.advisor.diagnosis import diagnose_failure
from forgellm.advisor.fixes import apply_fix
from forgellm.advisor.schemas import PlanRequest
from forgellm.config.schema import ForgeConfig
from forgellm.data.read.records import Record
from forgellm.data.study.profile import study_dataset
from forgellm.errors import ForgeError
from forgellm.export import quantize
from forgellm.export.gguf_arch import read_arch_config
from forgellm.export.pipeline import _num_ctx
from forgellm.hardware.disk import BYTES_PER_PARAM, bytes_per_param, is_disk_full, require_free_space
from forgellm.hardware.memory import MEMORY_LADDER, NF4_BYTES_PER_PARAM
from forgellm.models.architectures import GGUF_ARCHITECTURES, gguf_exportable
from forgellm.models.catalog import catalog, get_spec
from forgellm.models.dims import DEFAULT_CONTEXT_LENGTH, context_length_of, dims_from_config
from forgellm.models.lengths import MIN_MAX_LENGTH, max_length_for, shorter_max_length
from forgellm.planning import guards, planner
from forgellm.planning.candidates import _target_from_config, catalog_candidates, target_of_spec

DECODER = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 300,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
}


def _config(**sections) -> ForgeConfig:
    data = ForgeConfig().model_dump(mode="json")
    for section, values in sections.items():
        data[section].update(values)
    return ForgeConfig.model_validate(data)


# ------------------------------------------------------------------------------------------------ max_length


def test_short_data_gets_the_same_max_length_from_study_rules_and_planner(cpu_machine, online):
    short = {"rows": 200, "tokens": {"p50": 8.0, "p90": 10.0, "p99": 12.0, "max": 14.0, "mean": 8.0}}
    studied = study_dataset([Record(i + 1, {"text": "x" * 40}) for i in range(10)]).suggested_max_length
    ask = PlanRequest(
        goal="Make a customer support bot",
        hardware=cpu_machine.to_dict(),
        candidates=catalog_candidates(cpu_machine, 256, offline=False),
        data=short,
    )
    planned = rules_plan.propose_plan(ask).max_length
    sized = planner._planning_length(SimpleNamespace(tokens=short["tokens"]))
    assert studied["value"] == planned == sized == max_length_for(12.0)[0] == MIN_MAX_LENGTH


def test_memory_cuts_from_guards_and_diagnosis_stop_at_the_same_floor(cpu_machine):
    target = target_of_spec(get_spec("smollm2-135m"))
    never_fits = rules_plan.MemoryBudget(bytes=1, device="cpu", source="test", precision="fp32")
    ctx = SimpleNamespace(p90_tokens=None, target_of=lambda _key: target, budget=never_fits, gpus=None)
    values = {"model": target.key, "method": "lora", "precision": "fp32", "max_length": 4096, "micro_batch_size": 1,
              "lora_r": 4, "lora_targets": "all-linear", "gradient_checkpointing": True}  # fmt: skip
    corrections: list = []
    guards._shorter_length(values, ctx, guards.estimate_memory(values, target, never_fits), corrections)
    assert values["max_length"] == MIN_MAX_LENGTH

    config = _config(model={"max_length": 4096}, training={"micro_batch_size": 1, "gradient_checkpointing": True})
    lengths = []
    while (fix := diagnose_failure("train", "MemoryError", "", config)) and "model.max_length" in {
        c.key for c in fix.changes
    }:
        config = apply_fix(config, fix)
        lengths.append(config.model.max_length)
    assert lengths == [2048, 1024, 512, 256] and lengths[-1] == MIN_MAX_LENGTH


@pytest.mark.parametrize(
    ("length", "p90", "cut"),
    [
        (4096, None, 2048),
        (320, None, 256),
        (256, None, 256),
        (2048, 700.0, 1024),
        (1024, 700.0, 704),
        (704, 700.0, 704),
    ],
)
def test_one_cut_halves_in_multiples_of_64_down_to_the_floor(length, p90, cut):
    assert shorter_max_length(length, p90) == cut


# ------------------------------------------------------------------------------------------------ context, dims


def test_one_reader_of_dims_and_context_for_dicts_objects_and_multimodal_configs():
    from transformers import LlamaConfig

    as_dict = dims_from_config(DECODER)
    assert dims_from_config(LlamaConfig(**DECODER)) == as_dict
    assert context_length_of(LlamaConfig(**DECODER)) == context_length_of(DECODER) == 512
    multimodal = {"model_type": "gemma3", "text_config": DECODER}
    assert dims_from_config(multimodal) == as_dict and context_length_of(multimodal) == 512
    assert as_dict.head_dim == 16  # hidden / heads when the config states none


def test_planning_export_and_converter_read_the_same_context_and_dims():
    config = {"model_type": "llama", **DECODER}
    target = _target_from_config("tiny", config, None)
    arch = read_arch_config(config)
    assert target.dims == arch.dims == dims_from_config(config)
    assert target.context_length == arch.context_length == 512
    assert _num_ctx(_config(model={"max_length": 256}), config) == 512


def test_a_config_without_a_context_is_sized_with_the_default_and_refused_by_the_converter():
    config = {
        key: value for key, value in {"model_type": "llama", **DECODER}.items() if key != "max_position_embeddings"
    }
    assert context_length_of(config) is None
    assert _target_from_config("tiny", config, None).context_length == DEFAULT_CONTEXT_LENGTH
    assert _num_ctx(_config(model={"max_length": 4096}), config) == DEFAULT_CONTEXT_LENGTH
    with pytest.raises(ForgeError, match="max_position_embeddings"):
        read_arch_config(config)


def test_catalog_dims_are_what_the_planner_sizes(cpu_machine):
    for candidate in catalog_candidates(cpu_machine, 512, offline=False):
        assert rules_plan.dims_of(candidate) == get_spec(candidate["key"]).dims


# ------------------------------------------------------------------------------------------------ GGUF


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3",
                                        "gpt_neox", None])  # fmt: skip
def test_guards_warn_exactly_when_the_converter_cannot_export(model_type):
    target = SimpleNamespace(architecture=model_type, key="m")
    try:
        read_arch_config({"model_type": model_type, **DECODER, "query_pre_attn_scalar": 16})
        refused = False
    except ForgeError as exc:
        refused = "Cannot export" in exc.message
    assert bool(guards.gguf_warnings(target)) == refused == (not gguf_exportable(model_type))


def test_every_catalog_model_is_exportable_under_its_model_type():
    for spec in catalog():
        assert spec.model_type in GGUF_ARCHITECTURES
        assert target_of_spec(spec).architecture == spec.model_type


# ------------------------------------------------------------------------------------------------ memory ladder


def test_guards_and_diagnosis_climb_the_one_ladder_in_its_order():
    assert list(diagnosis._LADDER_MOVES) == list(MEMORY_LADDER)
    guard_moves = list(guards._LADDER_STEPS)
    assert guard_moves == [m for m in MEMORY_LADDER if m in guard_moves]  # the model is the advisor's choice

    config = _config(
        model={"ref": "smollm2-360m", "max_length": 512},
        training={"micro_batch_size": 2, "gradient_checkpointing": False, "method": "full"},
    )
    moves = []
    while (fix := diagnose_failure("train", "MemoryError", "", config)) and fix.changes:
        fields = [change.key.split(".")[-1] for change in fix.changes]
        moves += [{"ref": "model"}.get(f, f) for f in fields if f != "gradient_accumulation"]
        config = apply_fix(config, fix)
    ranks = [MEMORY_LADDER.index(m) for m in moves]
    assert ranks == sorted(ranks) and set(moves) == set(MEMORY_LADDER)


# ------------------------------------------------------------------------------------------------ disk


def test_one_bytes_per_parameter_table():
    assert bytes_per_param("bfloat16") == bytes_per_param("bf16") == 2.0
    assert bytes_per_param(None) == bytes_per_param("float32") == 4.0
    assert NF4_BYTES_PER_PARAM == BYTES_PER_PARAM["nf4"]
    assert bytes_per_param("q8_0") == 34 / 32  # llama.cpp's block: 32 int8 weights and one fp16 scale


def test_the_quantizer_checks_space_with_the_table(tmp_path, monkeypatch):
    source = tmp_path / "model-f16.gguf"
    source.write_bytes(b"\0" * 2_000_000)  # one million 16-bit parameters
    needed = 1_000_000 * BYTES_PER_PARAM["q4_k_m"]
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage._replace(free=int(needed) - 1))
    with pytest.raises(ForgeError, match="Not enough disk space"):
        quantize._check_free_space(source, tmp_path, "q4_k_m")
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage._replace(free=int(needed) + 1))
    quantize._check_free_space(source, tmp_path, "q4_k_m")
    with pytest.raises(ForgeError, match="for the weights"):
        monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage._replace(free=0))
        require_free_space(tmp_path, 1, "the weights", "Free some space.")


@pytest.mark.parametrize(
    "text",
    [
        "OSError: [Errno 28] No space left on device",
        "safetensors_rust.SafetensorError: Error while serializing: IoError(No space left on device (os error 28))",
        "OSError: [Errno 27] File too large",
        "OSError: [Errno 122] Disk quota exceeded",
        "write failed: ENOSPC",
        "The disk is full while saving step-40 of the run",
    ],
)
def test_one_disk_full_pattern_for_healing_checkpoints_and_diagnosis(text):
    assert is_disk_full(text)
    fix = diagnose_failure("train", "worker failed", text, _config())
    assert fix is not None and fix.problem == "disk"


def test_disk_full_by_errno_without_words():
    assert is_disk_full(OSError(errno.ENOSPC, "")) and not is_disk_full(OSError(errno.EACCES, "Permission denied"))
