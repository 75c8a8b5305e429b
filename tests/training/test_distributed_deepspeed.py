"""DeepSpeed ZeRO-3 for real: accelerate's launcher starts two CPU processes (FORGE_DISTRIBUTED_CPU=1
rehearses a 2-GPU run over gloo) whose engine, with and without the optimizer offloaded to CPU, takes
the steps one process takes; checkpoints are every strategy's files, and resume crosses strategies."""

from __future__ import annotations

import math

import pytest
from stage_support import staged

pytest.importorskip("deepspeed")

from forgellm.errors import ForgeError  # noqa: E402
from forgellm.project.run_record import list_checkpoints  # noqa: E402
from forgellm.training.runs import list_runs  # noqa: E402
from forgellm.training.summary import read_metrics  # noqa: E402
from forgellm.training.supervisor import run_training  # noqa: E402

# As test_distributed.py: one process accumulates 4 micro-batches of 1, two processes 2 each.
SINGLE = {"micro_batch_size": 1, "gradient_accumulation": 4, "max_steps": 4, "eval_every_steps": 2,
          "save_every_steps": 2, "packing": False}  # fmt: skip
PAIR = {**SINGLE, "gradient_accumulation": 2}
TOLERANCE = 1e-4  # fp32 sums in another order (ZeRO's reduce-scatter), as for DDP/FSDP


def _records(run_dir, kind: str) -> list[dict]:
    return [r for r in read_metrics(run_dir) if r.get("event") == kind]


def _steps(run_dir, field: str) -> list[float]:
    return [r[field] for r in _records(run_dir, "step")]


@pytest.fixture
def rehearsal(monkeypatch):
    monkeypatch.setenv("FORGE_DISTRIBUTED_CPU", "1")




@pytest.fixture
def reference(tiny_train_project):
    root, _ = tiny_train_project(**SINGLE)
    return run_training(*staged(root))


@pytest.mark.parametrize("offload", [False, True], ids=["zero3", "zero3-offload"])
def test_zero3_on_two_processes_takes_the_steps_of_one(tiny_train_project, rehearsal, reference, offload):
    root, _ = tiny_train_project(**PAIR)
    result = run_training(*staged(root), parallel={"distributed": "deepspeed", "gpus": 2, "offload": offload})
    assert result.status == "completed" and result.summary.steps == 4
    start = _records(result.run_dir, "start")[0]
    assert (start["distributed"], start["world_size"], start["gradient_accumulation"]) == ("deepspeed", 2, 2)
    losses, expected = _steps(result.run_dir, "loss"), _steps(reference.run_dir, "loss")
    assert not math.isclose(expected[0], expected[-1], rel_tol=1e-3), "nothing was learnt"
    assert losses == pytest.approx(expected, rel=TOLERANCE)
    # The norm sees the gradient's scale (AdamW barely does): the engine stepped on one process's gradient.
    assert _steps(result.run_dir, "grad_norm") == pytest.approx(_steps(reference.run_dir, "grad_norm"), rel=TOLERANCE)
    val = [[r["val_loss"] for r in _records(run.run_dir, "eval")] for run in (reference, result)]
    assert val[1] == pytest.approx(val[0], rel=TOLERANCE)
    # One checkpoint set, the files one process writes (export and eval read them unchanged).
    assert [c.step for c in list_checkpoints(result.run_dir)] == [2, 4]
    names = sorted(p.name for p in (result.run_dir / "checkpoints" / "step-4").iterdir())
    assert names == sorted(p.name for p in (reference.run_dir / "checkpoints" / "step-4").iterdir())
    assert len(_records(result.run_dir, "end")) == 1
