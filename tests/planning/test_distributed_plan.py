"""The plan on several GPUs: the strategy and GPU count (hardware/parallel_memory.choose_strategy), written
into forge.yaml with its reason and the per-GPU memory in the plan's record; one GPU plans as before."""

from __future__ import annotations

from dataclasses import replace

import pytest
from planning_support import make_gpu, make_hardware
from stage_support import planned

from forgellm.advisor.rules import RulesAdvisor
from forgellm.config.io import load_config, save_config
from forgellm.errors import ForgeError
from forgellm.hardware.memory import TIGHT_ABOVE
from forgellm.hardware.parallel_memory import estimate_per_gpu
from forgellm.models.catalog import get_spec
from forgellm.planning import PlanOverrides, make_plan
from forgellm.planning.distributed import PLAN_MARK
from forgellm.project import init_project

GIB = 2**30
GOAL = "Make a customer support bot"


def machine(count: int, vram_gib: float, name: str = "NVIDIA H100 80GB HBM3"):
    gpu = make_gpu(name, vram_gib, (9, 0))
    return make_hardware(tuple(replace(gpu, index=i) for i in range(count)), ram_gib=200, cores=16)


def plan(root, hardware, **overrides):
    return make_plan(*planned(root), GOAL, hardware=hardware, advisor=RulesAdvisor(), offline=False,
                     overrides=PlanOverrides(**overrides))  # fmt: skip


def test_a_7b_full_fine_tune_on_8x80gb_is_sharded_with_fsdp(tmp_path, online):
    result = plan(tmp_path, machine(8, 80), model="qwen2.5-7b", method="full")
    training = load_config(tmp_path).config.training
    assert (training.method, training.distributed, training.gpus, training.nodes, training.offload) == (
        "full", "fsdp", 8, 1, False,
    )  # fmt: skip
    assert f"{PLAN_MARK}fsdp, 8 GPU(s) x 1 machine(s)): FSDP needs ~" in training.rationale
    assert "sharded across the 8 GPUs" in training.rationale
    record = result.to_dict()["distributed"]
    expected = estimate_per_gpu(
        get_spec("qwen2.5-7b"), strategy="fsdp", world_size=8, method="full", seq_len=result.config.model.max_length,
        micro_batch=training.micro_batch_size, precision=training.precision, lora_r=training.lora.r,
        gradient_checkpointing=training.gradient_checkpointing,
    )  # fmt: skip
    assert record["per_gpu"]["per_gpu_bytes"] == expected.per_gpu_bytes == record["per_gpu_bytes"]
    assert expected.per_gpu_bytes <= TIGHT_ABOVE * 80 * GIB < result.memory.total_bytes  # one GPU would not do
    assert "per GPU with fsdp on 8 GPUs" in result.config.hardware.rationale


def test_sharding_comes_before_a_lighter_method(tmp_path, online):
    # 4 x 16 GiB: LoRA of a 7B needs ~19 GiB on one GPU (one GPU alone would step down to QLoRA), ~10 GiB
    # per GPU sharded: the plan keeps LoRA and shards it.
    result = plan(tmp_path, machine(4, 16, "NVIDIA A100 16GB"), model="qwen2.5-7b")
    training = result.config.training
    assert (training.method, training.distributed, training.gpus) == ("lora", "fsdp", 4)
    assert not [c for c in result.corrections if c.key == "training.method"]
    one = plan(tmp_path / "one", machine(1, 16, "NVIDIA A100 16GB"), model="qwen2.5-7b")
    assert one.config.training.method == "qlora"


def test_a_small_lora_on_4_gpus_uses_ddp(tmp_path, online):
    result = plan(tmp_path, machine(4, 80), model="qwen2.5-0.5b", method="lora")
    training = result.config.training
    assert (training.distributed, training.gpus, training.offload) == ("ddp", 4, False)
    assert "DDP needs ~" in training.rationale and "full copy" in training.rationale
    assert result.to_dict()["distributed"]["strategy"] == "ddp"
    # The examples per optimizer step are the one-GPU plan's: each process accumulates its share.
    one = plan(tmp_path / "one", machine(1, 80), model="qwen2.5-0.5b", method="lora").config.training
    assert training.micro_batch_size * training.gradient_accumulation * 4 == max(
        one.micro_batch_size * one.gradient_accumulation, training.micro_batch_size * 4
    )
    assert f"Each of the 4 processes accumulates {training.gradient_accumulation} micro-batch(es)" in training.rationale


def test_one_gpu_plans_as_before(tmp_path, online):
    result = plan(tmp_path, machine(1, 80), model="qwen2.5-0.5b", method="lora")
    training = result.config.training
    assert (training.distributed, training.gpus, training.nodes, training.offload) == ("auto", None, 1, False)
    assert PLAN_MARK not in training.rationale and result.to_dict()["distributed"] is None
    assert "per GPU" not in result.config.hardware.rationale
    with pytest.raises(ForgeError):  # a 7B full fine-tune does not fit one 80 GB GPU, as before
        plan(tmp_path / "full", machine(1, 80), model="qwen2.5-7b", method="full")


def test_a_strategy_the_plan_chose_is_chosen_again_on_other_hardware(tmp_path, online):
    plan(tmp_path, machine(4, 80), model="qwen2.5-0.5b", method="lora")
    assert load_config(tmp_path).config.training.distributed == "ddp"
    again = plan(tmp_path, machine(1, 80), model="qwen2.5-0.5b", method="lora")
    assert (again.config.training.distributed, again.config.training.gpus) == ("auto", None)


def test_the_users_strategy_and_gpu_count_are_kept(tmp_path, online):
    init_project(tmp_path)
    config = load_config(tmp_path).config
    config.training.distributed, config.training.gpus = "deepspeed", 2
    save_config(config, tmp_path / "forge.yaml")
    result = plan(tmp_path, machine(8, 80), model="qwen2.5-0.5b", method="lora")
    training = result.config.training
    assert (training.distributed, training.gpus) == ("deepspeed", 2)
    assert "You set training.distributed: deepspeed" in training.rationale


def test_distributed_none_plans_for_one_gpu(tmp_path, online):
    init_project(tmp_path)
    config = load_config(tmp_path).config
    config.training.distributed = "none"
    save_config(config, tmp_path / "forge.yaml")
    with pytest.raises(ForgeError):
        plan(tmp_path, machine(8, 80), model="qwen2.5-7b", method="full")
