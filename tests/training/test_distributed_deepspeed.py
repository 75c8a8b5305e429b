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

# As test_distributed.py: one process accumulates 4 micro-batches of 1, two processes 2 each. The
# gradient norms are about 0.3: clipped to 0.2, so DeepSpeed's own clipping takes part.
SINGLE = {"micro_batch_size": 1, "gradient_accumulation": 4, "max_steps": 4, "eval_every_steps": 2,
          "save_every_steps": 2, "packing": False, "max_grad_norm": 0.2}  # fmt: skip
PAIR = {**SINGLE, "gradient_accumulation": 2}
TOLERANCE = 1e-4  # fp32 sums in another order (ZeRO's reduce-scatter), as for DDP/FSDP


def _records(run_dir, kind: str) -> list[dict]:
    return [r for r in read_metrics(run_dir) if r.get("event") == kind]


def _steps(run_dir, field: str) -> list[float]:
    return [r[field] for r in _records(run_dir, "step")]


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
    # The gathered weights are the one-process weights (keyed as the model's own state_dict).
    from safetensors.torch import load_file

    ours, theirs = ({k: v for f in (run.run_dir / "checkpoints" / "step-4").glob("*.safetensors")
                     for k, v in load_file(str(f)).items()} for run in (result, reference))  # fmt: skip
    assert theirs
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-5), key


def test_a_crashed_group_resumes_its_optimizer_under_zero3(tiny_train_project, rehearsal, reference, monkeypatch):
    """The restart after a crash loads the checkpoint's by-name optimizer state into ZeRO's partitions:
    steps 3 and 4 are the reference's (a fresh Adam state would step differently)."""
    root, _ = tiny_train_project(**PAIR)
    monkeypatch.setenv("FORGE_FAULT", "crash@3")  # after the checkpoint of step 2
    result = run_training(*staged(root), parallel={"distributed": "deepspeed", "gpus": 2})
    assert result.status == "completed" and result.summary.steps == 4
    (recovery,) = _records(result.run_dir, "recovery")
    assert recovery["kind"] == "crash" and recovery["resume_from"].endswith("step-2")
    assert [s["step"] for s in _records(result.run_dir, "start")] == [0, 2]
    assert _steps(result.run_dir, "loss")[-2:] == pytest.approx(_steps(reference.run_dir, "loss")[-2:], rel=TOLERANCE)
    norms = _steps(result.run_dir, "grad_norm")[-2:]
    assert norms == pytest.approx(_steps(reference.run_dir, "grad_norm")[-2:], rel=TOLERANCE)


def test_one_process_resumes_a_zero3_run(tiny_train_project, rehearsal, reference, monkeypatch):
    """ZeRO-3's checkpoint is every strategy's: one process without DeepSpeed continues it."""
    root, _ = tiny_train_project(**PAIR, max_recoveries=0)
    monkeypatch.setenv("FORGE_FAULT", "crash@3")
    with pytest.raises(ForgeError):
        run_training(*staged(root), parallel={"distributed": "deepspeed", "gpus": 2})
    (run_dir,) = list_runs(root)
    assert [c.step for c in list_checkpoints(run_dir)] == [2]
    monkeypatch.delenv("FORGE_FAULT")
    monkeypatch.delenv("FORGE_DISTRIBUTED_CPU")
    result = run_training(*staged(root), resume=True, parallel={"gpus": 1})
    assert result.status == "completed" and result.summary.steps == 4
    start = _records(run_dir, "start")[-1]
    assert (start["step"], start["world_size"], start["gradient_accumulation"]) == (2, 1, 4)
    assert _steps(run_dir, "loss")[-2:] == pytest.approx(_steps(reference.run_dir, "loss")[-2:], rel=TOLERANCE)


def test_the_launcher_starts_deepspeed_with_a_launcher_per_machine(tmp_path):
    """accelerate's DeepSpeed launch, torchrun on each machine (no pdsh over ssh); its settings are the
    worker's (deepspeed_group.py), so none of them is a launcher flag that could disagree."""
    from forgellm.training.launch import LaunchOptions, ParallelPlan, worker_command

    plan = ParallelPlan("deepspeed", gpus=4, nodes=2, offload=True)
    command = worker_command(tmp_path, None, plan, LaunchOptions(node_rank=1, main_address="10.0.0.1"))
    joined = " ".join(command)
    assert "--use_deepspeed --zero3_init_flag false --deepspeed_multinode_launcher standard" in joined
    assert "--multi_gpu" not in command and "--num_processes 8 --num_machines 2 --machine_rank 1" in joined
    assert command[-3:] == ["-m", "forgellm.training.worker", str(tmp_path)]
