"""Training on several processes, for real: accelerate's launcher starts two CPU processes that train
the tiny model over gloo (FORGE_DISTRIBUTED_CPU=1 rehearses a 2-GPU run on this GPU-less machine),
with DDP and with FSDP2, through the same supervisor a user's `forge train --gpus 2` runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from stage_support import staged

from forgellm.errors import ForgeError
from forgellm.project.layout import TRAINER_STATE
from forgellm.project.run_record import RunSummary, list_checkpoints
from forgellm.training.runs import list_runs
from forgellm.training.summary import read_metrics
from forgellm.training.supervisor import run_training

# One process accumulates 4 micro-batches of 1; two processes 2 each: the same 4 examples per step.
SINGLE = {"micro_batch_size": 1, "gradient_accumulation": 4, "max_steps": 4, "eval_every_steps": 2,
          "save_every_steps": 2, "packing": False}  # fmt: skip
PAIR = {**SINGLE, "gradient_accumulation": 2}
# Float sums in another order (per-process partial losses and gradients all-reduced): equal to ~1e-6
# relative in fp32; the tolerance leaves room for the thread count's summation order, nothing more.
LOSS_TOLERANCE = 1e-4


def _records(run_dir: Path, kind: str) -> list[dict]:
    return [r for r in read_metrics(run_dir) if r.get("event") == kind]


def _losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in _records(run_dir, "step")]


def _val_losses(run_dir: Path) -> list[float]:
    return [r["val_loss"] for r in _records(run_dir, "eval")]


@pytest.fixture
def single_run(tiny_train_project):
    """The reference: one process, 4 micro-batches per step (shared by the strategies' tests)."""
    root, _ = tiny_train_project(**SINGLE)
    return run_training(*staged(root))


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_give_the_losses_of_one(tiny_train_project, rehearsal, single_run, strategy):
    root, _ = tiny_train_project(**PAIR)
    result = run_training(*staged(root), parallel={"distributed": strategy, "gpus": 2})
    assert result.status == "completed" and result.summary.steps == 4
    start = _records(result.run_dir, "start")[0]
    assert (start["distributed"], start["world_size"], start["gradient_accumulation"]) == (strategy, 2, 2)
    reference, pair = _losses(single_run.run_dir), _losses(result.run_dir)
    assert len(pair) == 4 and not math.isclose(reference[0], reference[-1], rel_tol=1e-3), "nothing was learnt"
    assert pair == pytest.approx(reference, rel=LOSS_TOLERANCE)
    # AdamW barely sees a gradient's scale; the norm does: the processes' gradients add up to one process's.
    norms = [[r["grad_norm"] for r in _records(run.run_dir, "step")] for run in (single_run, result)]
    assert norms[1] == pytest.approx(norms[0], rel=LOSS_TOLERANCE)
    assert _val_losses(result.run_dir) == pytest.approx(_val_losses(single_run.run_dir), rel=LOSS_TOLERANCE)
    # One checkpoint set, written once, as one process writes it (rank 0 only; no per-rank files).
    assert [c.step for c in list_checkpoints(result.run_dir)] == [2, 4]
    names = sorted(p.name for p in (result.run_dir / "checkpoints" / "step-4").iterdir())
    assert names == sorted(p.name for p in (single_run.run_dir / "checkpoints" / "step-4").iterdir())
    assert len(_records(result.run_dir, "end")) == 1  # rank 1 prints no events of its own


def test_resume_on_one_process_continues_a_two_process_run(tiny_train_project, rehearsal, single_run, monkeypatch):
    root, _ = tiny_train_project(**PAIR, max_recoveries=0)
    monkeypatch.setenv("FORGE_FAULT", "crash@3")  # after the checkpoint of step 2; no recovery allowed
    with pytest.raises(ForgeError):
        run_training(*staged(root), parallel={"distributed": "ddp", "gpus": 2})
    (run_dir,) = list_runs(root)
    assert [c.step for c in list_checkpoints(run_dir)] == [2]
    monkeypatch.delenv("FORGE_FAULT")
    monkeypatch.delenv("FORGE_DISTRIBUTED_CPU")
    result = run_training(*staged(root), resume=True, parallel={"gpus": 1})
    assert result.status == "completed" and result.summary.steps == 4
    start = _records(run_dir, "start")[-1]
    assert (start["step"], start["world_size"], start["gradient_accumulation"]) == (2, 1, 4)
    assert any("Resumed on 1 process" in w["message"] for w in _records(run_dir, "warning"))
    # Steps 3 and 4 are the steps the single process took: the data position and optimizer carried over.
    assert _losses(run_dir)[-2:] == pytest.approx(_losses(single_run.run_dir)[-2:], rel=LOSS_TOLERANCE)


def test_a_rank_that_dies_restarts_the_group_from_the_last_checkpoint(tiny_train_project, rehearsal, monkeypatch):
    root, _ = tiny_train_project(**PAIR)
    monkeypatch.setenv("FORGE_FAULT", "kill@3")
    monkeypatch.setenv("FORGE_FAULT_RANK", "1")
    result = run_training(*staged(root), parallel={"distributed": "ddp", "gpus": 2})
    assert result.status == "completed" and result.summary.steps == 4
    (recovery,) = _records(result.run_dir, "recovery")
    assert recovery["kind"] == "crash" and Path(recovery["resume_from"]).name == "step-2"
    assert [s["step"] for s in _records(result.run_dir, "start")] == [0, 2]
    assert "SIGKILL" in (result.run_dir / "logs" / "worker-1.log").read_text()
    assert RunSummary.load(result.run_dir).attempts == 2


def test_an_out_of_memory_on_rank_1_is_healed_by_sharding(tiny_train_project, rehearsal, monkeypatch):
    root, _ = tiny_train_project(**PAIR)
    monkeypatch.setenv("FORGE_FAULT", "oom@3")
    monkeypatch.setenv("FORGE_FAULT_RANK", "1")
    result = run_training(*staged(root), parallel={"distributed": "ddp", "gpus": 2})
    assert result.status == "completed"
    (recovery,) = _records(result.run_dir, "recovery")
    assert recovery["kind"] == "oom" and recovery["changes"]["training.distributed"] == {"from": "ddp", "to": "fsdp"}
    assert [s["distributed"] for s in _records(result.run_dir, "start")] == ["ddp", "fsdp"]
    assert (result.run_dir / "checkpoints" / "step-4" / TRAINER_STATE).is_file()


@pytest.mark.parametrize(("strategy", "launcher"), [("fsdp", "torch.distributed.run"),
                                                    ("deepspeed", "accelerate.commands.launch")])  # fmt: skip
def test_an_explicit_strategy_on_one_process_trains_like_one_plain_process(
    tiny_train_project, rehearsal, single_run, strategy, launcher
):
    """One GPU and an explicit fsdp or deepspeed: still launched and wrapped, since offloading the shards to
    CPU RAM is how a model larger than one GPU trains there (FSDP's offload itself needs a GPU:
    benchmarks/gpu_check.py runs it)."""
    root, _ = tiny_train_project(**SINGLE)
    result = run_training(*staged(root), parallel={"distributed": strategy, "gpus": 1})
    start = _records(result.run_dir, "start")[0]
    assert (start["distributed"], start["world_size"]) == (strategy, 1)
    assert launcher in (result.run_dir / "logs" / "worker-1.log").read_text()
    assert _losses(result.run_dir) == pytest.approx(_losses(single_run.run_dir), rel=LOSS_TOLERANCE)
