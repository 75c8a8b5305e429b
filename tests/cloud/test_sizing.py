"""The accelerators of a cloud task come from the memory estimate (hardware.parallel_memory), `--gpu` is
read strictly, and the disk and run command follow from the project. No SkyPilot needed."""

from __future__ import annotations

import pytest

from forgellm.cloud.gpus import CLOUD_GPUS, GpuRequest, gpu_memory_bytes, parse_gpu, size_accelerators
from forgellm.cloud.task import GB, disk_gb, run_command
from forgellm.config.schema import TrainingSection
from forgellm.errors import ErrorCode, ForgeError
from forgellm.models.catalog import get_spec


def _training(method: str, **extra) -> TrainingSection:
    return TrainingSection(method=method, precision="bf16", micro_batch_size=4, **extra)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("H100:2", GpuRequest("H100", 2)),
        ("a100-80gb", GpuRequest("A100-80GB", None)),
        (" L4 : 1 ", GpuRequest("L4", 1)),
    ],
)
def test_gpu_spec_is_read_in_skypilot_spelling(spec, expected):
    assert parse_gpu(spec) == expected


@pytest.mark.parametrize("spec", ["H100:x", "H100:3", "H100:0", ":2", "", "H100:2:2"])
def test_a_malformed_gpu_spec_shows_the_form(spec):
    with pytest.raises(ForgeError) as caught:
        parse_gpu(spec)
    assert caught.value.code == ErrorCode.USAGE_INVALID
    assert "TYPE:COUNT" in caught.value.message and "--gpu H100:2" in caught.value.fix


def test_an_unknown_gpu_lists_the_known_ones():
    with pytest.raises(ForgeError) as caught:
        parse_gpu("V100:2")
    assert caught.value.code == ErrorCode.USAGE_INVALID
    assert "'V100'" in caught.value.message
    assert all(name in caught.value.fix for name in CLOUD_GPUS)


def test_a_7b_full_fine_tune_needs_several_80gb_gpus():
    dims = get_spec("qwen2.5-7b").dims
    sizing = size_accelerators(dims, _training("full"), seq_len=1024, request=None, nodes=1)
    assert sizing.gpu == "H100" and sizing.count in (2, 4, 8)
    assert sizing.strategy in ("fsdp", "deepspeed")  # sharded: one copy does not fit 80 GB
    assert sizing.per_gpu_bytes <= gpu_memory_bytes("H100")
    assert sizing.chosen_by == "estimate" and sizing.reason
    # Half as many: only with the states in CPU RAM (slower), which a cloud task avoids when more GPUs fit.
    half = GpuRequest("H100", sizing.count // 2)
    fewer = size_accelerators(dims, _training("full"), seq_len=1024, request=half, nodes=1)
    assert fewer.strategy.endswith("+ offload") and fewer.chosen_by == "--gpu"


def test_a_small_lora_fits_one_small_gpu():
    dims = get_spec("qwen2.5-0.5b").dims
    sizing = size_accelerators(dims, _training("lora"), seq_len=1024, request=GpuRequest("L4", None), nodes=1)
    assert (sizing.gpu, sizing.count, sizing.strategy) == ("L4", 1, "none")
    assert sizing.accelerators == "L4:1"
    default = size_accelerators(dims, _training("lora"), seq_len=1024, request=None, nodes=1)
    assert default.accelerators == "H100:1"


def test_a_training_that_fits_nowhere_says_so():
    dims = get_spec("qwen2.5-7b").dims
    with pytest.raises(ForgeError) as caught:
        size_accelerators(dims, _training("full"), seq_len=1024, request=GpuRequest("L4", 1), nodes=1)
    assert caught.value.code == ErrorCode.MEMORY_INSUFFICIENT
    assert "L4" in caught.value.message


def test_disk_holds_model_checkpoints_and_data():
    params, data = 7_000_000_000, 5 * GB
    # 60 GB base + 2 x 14 GB model + 3 full checkpoints of 14 bytes/param + 10 GB data = 392 GB -> 400
    assert disk_gb(params, params, "full", 2, data) == 400
    # LoRA checkpoints are adapters: 60 + 28 + small + 10 -> 100 (the minimum)
    assert disk_gb(params, 40_000_000, "lora", 2, data) == 100


def test_multi_node_run_maps_skypilots_node_environment():
    one = run_command(4, 1)
    assert "forge train --gpus 4" in one and "SKYPILOT" not in one
    many = run_command(8, 2)
    assert '--nodes 2 --node-rank "$SKYPILOT_NODE_RANK"' in many
    assert '--main-address "$(echo "$SKYPILOT_NODE_IPS" | head -n1)"' in many


def test_counts_follow_what_the_providers_catalog_offers():
    dims = get_spec("qwen2.5-7b").dims
    # An AWS-like catalog: H100 only as 8 on one machine; the count is taken from it, not refused at launch.
    sizing = size_accelerators(dims, _training("full"), seq_len=1024, request=None, nodes=1, offered={"H100": (8,)})
    assert sizing.accelerators == "H100:8" and sizing.strategy in ("ddp", "fsdp", "deepspeed")
    # A provider without H100 but with H200: the default falls to the type it has.
    small = get_spec("qwen2.5-0.5b").dims
    sizing = size_accelerators(small, _training("lora"), seq_len=1024, request=None, nodes=1, offered={"H200": (1, 8)})
    assert sizing.accelerators == "H200:1"
