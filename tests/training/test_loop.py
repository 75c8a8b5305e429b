"""The training loop in-process: it learns, resumes exactly, stops for the right reasons, and turns bad
input into clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from forgellm.training.protocol import ExitCode

from .conftest import make_run_dir


def run_training(run_dir, resume=None) -> tuple[ExitCode, list[dict]]:
    from forgellm.training.loop import train

    lines: list[str] = []
    code = train(run_dir, resume, lines.append)
    return code, [json.loads(line) for line in lines]


def of_kind(events, kind):
    return [e for e in events if e["event"] == kind]


def adapter(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_lora_training_changes_the_adapters_and_lowers_the_loss(tiny_train_project, tiny_causal_lm_dir):
    from safetensors.torch import load_file

    root, prepared = tiny_train_project(
        max_steps=12, learning_rate=5e-3, eval_every_steps=6, save_every_steps=6, gradient_checkpointing=True
    )
    run_dir = make_run_dir(root, prepared)
    code, events = run_training(run_dir)
    assert code == ExitCode.OK
    start, steps = of_kind(events, "start")[0], of_kind(events, "step")
    assert 0 < start["trainable_params"] < start["total_params"] and start["packing"] is True
    losses = [s["loss"] for s in steps]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05
    evals = of_kind(events, "eval")
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert all(s["real_tokens"] <= s["tokens"] and s["tokens_per_s"] > 0 and s["memory_bytes"] > 0 for s in steps)
    trained = adapter(run_dir / "checkpoints" / "step-12")
    lora_b = [t for name, t in trained.items() if "lora_B" in name]
    assert lora_b and all(t.abs().max() > 0 for t in lora_b)  # lora_B starts at zero: it moved
    best = json.loads((run_dir / "best" / "best.json").read_text())
    assert best["step"] == of_kind(events, "end")[0]["best_step"]
    base = load_file(str(tiny_causal_lm_dir / "model.safetensors"))
    assert not any("lora" in name for name in base)  # the base folder is never written


def test_full_fine_tuning_trains_every_weight(tiny_train_project):
    root, prepared = tiny_train_project(
        method="full", max_steps=3, eval_every_steps=3, save_every_steps=3, gradient_checkpointing=True
    )
    code, events = run_training(make_run_dir(root, prepared))
    assert code == ExitCode.OK
    start = of_kind(events, "start")[0]
    assert start["trainable_params"] == start["total_params"]
    assert (root / "runs" / "run-1" / "best" / "model.safetensors").is_file()


def test_resume_with_another_micro_batch_continues_at_the_same_example(tiny_train_project):
    """Steps of 4 examples-rows as 1 x 4 or, after resuming, 2 x 2: the same rows, the same update."""
    root, prepared = tiny_train_project(max_steps=6, eval_every_steps=3, save_every_steps=3)
    straight = make_run_dir(root, prepared, "straight")
    assert run_training(straight)[0] == ExitCode.OK
    halved = make_run_dir(root, prepared, "halved")
    assert run_training(halved)[0] == ExitCode.OK
    for step in ("step-6",):  # restart the second run from step 3 with micro-batches of 2
        import shutil

        shutil.rmtree(halved / "checkpoints" / step)
    config_path = halved / "config.yaml"
    config_path.write_text(config_path.read_text().replace("micro_batch_size: 4", "micro_batch_size: 2")
                           .replace("gradient_accumulation: 1", "gradient_accumulation: 2"))
    code, events = run_training(halved, halved / "checkpoints" / "step-3")
    assert code == ExitCode.OK and of_kind(events, "start")[0]["micro_batch_size"] == 2
    want_state = torch.load(straight / "checkpoints" / "step-6" / "trainer_state.pt", weights_only=False)
    got_state = torch.load(halved / "checkpoints" / "step-6" / "trainer_state.pt", weights_only=False)
    assert got_state["progress"]["position"] == want_state["progress"]["position"]
    want, got = adapter(straight / "checkpoints" / "step-6"), adapter(halved / "checkpoints" / "step-6")
    assert max(float((want[n] - got[n]).abs().max()) for n in want) < 1e-5


def test_early_stopping_ends_the_run_when_validation_stops_improving(tiny_train_project):
    root, prepared = tiny_train_project(
        packing=False, max_steps=50, eval_every_steps=1, save_every_steps=100,
        early_stopping={"enabled": True, "patience": 2, "min_delta": 10.0},
    )
    code, events = run_training(make_run_dir(root, prepared))
    assert code == ExitCode.OK
    end = of_kind(events, "end")[0]
    assert end["reason"] == "early_stopping" and end["step"] == 3 and end["best_step"] == 1
    assert [e["improved"] for e in of_kind(events, "eval")] == [True, False, False]
    assert of_kind(events, "checkpoint")[-1]["reason"] == "end"


def test_the_time_budget_stops_after_saving(tiny_train_project):
    root, prepared = tiny_train_project(max_steps=50, time_budget_minutes=0.0001)
    code, events = run_training(make_run_dir(root, prepared))
    assert code == ExitCode.OK
    assert of_kind(events, "end")[0]["reason"] == "time_budget"
    assert [w["kind"] for w in of_kind(events, "warning")] == ["time_budget"]
    assert of_kind(events, "checkpoint")[-1] == {**of_kind(events, "checkpoint")[-1], "step": 1, "reason": "end"}


def test_overfitting_is_reported_and_can_stop_the_run(tiny_train_project):
    from forgellm.training.loop import TrainingLoop

    root, prepared = tiny_train_project(max_steps=50, stop_on_overfitting=True, overfitting_threshold=0.1)
    lines: list[str] = []
    loop = TrainingLoop(make_run_dir(root, prepared), lines.append, None, lambda: False)
    loop.setup(None)
    loop.progress.train_losses = [3.0] * 10 + [2.0] * 10  # training loss still falling ...
    loop.progress.best_val_loss, loop.progress.best_step = 2.5, 10
    loop.validation_loss = lambda: 2.9  # ... while validation is 16% above its best
    assert loop.evaluate() == "overfitting"
    assert json.loads(lines[-1])["kind"] == "overfitting" or json.loads(lines[-2])["kind"] == "overfitting"
    loop.validation_loss = lambda: 2.6  # within the threshold: no warning, no stop
    assert loop.evaluate() is None


def test_data_prepared_for_another_tokenizer_is_refused(tiny_train_project):
    root, prepared = tiny_train_project(max_steps=2)
    run_dir = make_run_dir(root, prepared)
    manifest = json.loads((prepared / "manifest.json").read_text())
    manifest["tokenizer"] = "HuggingFaceTB/SmolLM2-135M-Instruct:49152"
    (prepared / "manifest.json").write_text(json.dumps(manifest))
    code, events = run_training(run_dir)
    assert code == ExitCode.CONFIG
    error = of_kind(events, "error")[0]
    # code, message, fix and data are fields of their own: nobody has to take the text apart.
    assert error["kind"] == "config" and "another tokenizer" in error["message"] and "forge prepare" in error["fix"]
    assert error["code"] == "prepared-data-stale" and "Fix:" not in error["message"] and error["data"] == {}


def test_missing_prepared_data_is_a_config_error(tiny_train_project):
    root, prepared = tiny_train_project(max_steps=2)
    run_dir = make_run_dir(root, prepared)
    (prepared / "train.parquet").unlink()
    code, events = run_training(run_dir)
    error = of_kind(events, "error")[0]
    assert code == ExitCode.CONFIG and "forge prepare FILE" in error["fix"] and error["code"] == "prepared-data-missing"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_qlora_without_a_gpu_names_the_alternative(tiny_train_project):
    root, prepared = tiny_train_project(method="qlora", max_steps=2)
    code, events = run_training(make_run_dir(root, prepared))
    error = of_kind(events, "error")[0]
    assert code == ExitCode.CONFIG and "--method lora" in error["fix"] and error["code"] == "hardware-unsupported"
