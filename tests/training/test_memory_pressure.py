"""Real memory pressure: the worker runs under a real memory limit (RLIMIT_DATA, set by the supervisor
from FORGE_WORKER_MEMORY_LIMIT) and really runs out; the supervisor must call it an OOM and heal it.

The model is the tiny Llama with a very wide MLP (intermediate 32768), so the activations of a step,
which grow with the micro-batch, are far larger than anything else the worker allocates after setup.
The limit sits between the data segment the worker needs at micro-batch 2 with gradient checkpointing
(what healing switches to) and what it needs at micro-batch 4 without. Measured by bisecting the limit
over real runs of this test (this machine, 1 thread, pyarrow on the system allocator as the supervisor
sets it under a limit): micro-batch 4 fails at 1720 MiB and passes at 1800; the healed micro-batch 2
fails at 850 and passes at 1000. LIMIT is 1350 MiB: 350 MiB (35%) above the healed need and 370 MiB
below the first attempt's. (With pyarrow's mimalloc, which reserves up to 1 GiB that RLIMIT_DATA
counts, the same run at 1900 MiB failed every attempt in about one run of four.)

RLIMIT_DATA rather than RLIMIT_AS: after `import torch, transformers, peft` the address space is
870 MB (455 MB of it shared libraries) against a data segment of 361 MB, and every thread's reserved
arena adds to it, so an address-space limit measures the libraries and threads more than the tensors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from stage_support import staged
from templates_support import make_tokenizer
from tiny_project_support import CHATML, TRAIN_DEFAULTS

from forgellm.config.io import save_config
from forgellm.config.schema import ForgeConfig
from forgellm.training.protocol import MEMORY_LIMIT_ENV
from forgellm.training.summary import read_metrics

LIMIT = 1350 * (1 << 20)
WIDE = {"max_steps": 1, "save_every_steps": 1, "eval_every_steps": 3, "micro_batch_size": 4}


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("wide-causal-lm")
    tokenizer = make_tokenizer(bos="<|im_start|>", eos="<|im_end|>", pad="<|im_end|>", chat_template=CHATML)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=32768, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def wide_project(tmp_path, wide_model_dir, _support_csv):
    from forgellm.data.prepare.run import prepare_dataset

    root = tmp_path / "project"
    root.mkdir()
    data = {
        "model": {"ref": str(wide_model_dir), "max_length": 256, "chat_template": {"name": "chatml"}},
        "training": {**TRAIN_DEFAULTS, **WIDE},
    }
    save_config(ForgeConfig.model_validate(data), root / "forge.yaml")
    return root, prepare_dataset(*staged(root), _support_csv).output_dir


@pytest.mark.slow
def test_a_worker_that_really_runs_out_of_memory_is_healed_as_oom(wide_project, monkeypatch):
    from forgellm.training.supervisor import run_training

    root, _ = wide_project
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(LIMIT))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the threads' stacks and arenas count: as measured
    result = run_training(*staged(root))
    assert result.status == "completed" and result.summary.steps == 1
    records = read_metrics(result.run_dir)
    (error,) = [r for r in records if r["event"] == "error"]
    assert error["kind"] == "oom" and error["code"] == "train-out-of-memory" and error["data"]["device"] == "cpu"
    assert "can't allocate memory" in error["data"]["cause"]  # torch's own allocator failed: no injection
    (recovery,) = [r for r in records if r["event"] == "recovery"]
    assert recovery["kind"] == "oom" and recovery["changes"]["training.micro_batch_size"] == {"from": 4, "to": 2}
    starts = [r for r in records if r["event"] == "start"]
    assert [(s["micro_batch_size"], s["gradient_accumulation"]) for s in starts] == [(4, 1), (2, 2)]
    log = (result.run_dir / "logs" / "worker-1.log").read_text()
    assert f"RLIMIT_DATA = {LIMIT} bytes" in log and "FORGE_FAULT" not in os.environ


def test_the_memory_limit_must_be_a_number_of_bytes(tiny_train_project, monkeypatch):
    from forgellm.errors import ForgeError
    from forgellm.training.supervisor import run_training

    root, _ = tiny_train_project()
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "2G")
    with pytest.raises(ForgeError, match=MEMORY_LIMIT_ENV) as caught:
        run_training(*staged(root))
    assert "whole number of bytes" in caught.value.fix
