"""Self-healing decisions: what a failed attempt means and what the next attempt changes.

These are the pure rules; test_supervisor.py runs them against the real worker with injected faults.
"""

from __future__ import annotations

import signal

import pytest

from forgellm.config.schema import ForgeConfig
from forgellm.errors import ErrorCode, ForgeError
from forgellm.training.healing import Failure, classify, plan_recovery
from forgellm.training.protocol import ExitCode


def _config(**training) -> ForgeConfig:
    defaults = {"micro_batch_size": 4, "gradient_accumulation": 1, "gradient_checkpointing": True}
    return ForgeConfig.model_validate({"training": {**defaults, **training}})


def _plan(failure: Failure, config: ForgeConfig, *, recoveries=(), previous=None, log_tail=""):
    return plan_recovery(
        failure, config, attempt=1, recoveries=list(recoveries), previous=previous, log_tail=log_tail, run_id="r1"
    )


@pytest.mark.parametrize(
    ("exit_code", "error", "ended", "kind"),
    [
        (ExitCode.OOM, {"kind": "oom", "message": "Out of memory: CUDA out of memory", "step": 3}, False, "oom"),
        (ExitCode.NAN, {"kind": "nan", "message": "The loss of step 5 is nan", "step": 5}, False, "nan"),
        (ExitCode.FAILED, {"kind": "crash", "message": "RuntimeError: boom", "step": 4}, False, "crash"),
        (ExitCode.CONFIG, {"kind": "config", "message": "model.ref is wrong"}, False, "config"),
        (ExitCode.CONFIG, {"kind": "data", "message": "prepared data is gone"}, False, "data"),
        (-signal.SIGKILL, None, False, "killed"),
        (ExitCode.OK, None, False, "crash"),  # exit 0 without an `end` event did not finish
    ],
)
def test_classify_by_exit_code(exit_code, error, ended, kind):
    failure = classify(int(exit_code), error, ended, checkpoint_step=2)
    assert failure is not None and failure.kind == kind and failure.checkpoint_step == 2
    if kind == "killed":
        assert "SIGKILL" in failure.message


def test_a_finished_attempt_is_no_failure():
    assert classify(0, None, True, 20) is None


def test_oom_halves_the_micro_batch_and_keeps_the_effective_batch():
    config = _config(micro_batch_size=4, gradient_accumulation=1)
    recovery = _plan(Failure("oom", "Out of memory: not enough memory", ExitCode.OOM, step=3), config)
    assert recovery.changes == {
        "training.micro_batch_size": {"from": 4, "to": 2},
        "training.gradient_accumulation": {"from": 1, "to": 2},
    }
    t = recovery.config.training
    assert t.micro_batch_size * t.gradient_accumulation == 4
    assert config.training.micro_batch_size == 4  # the old config object is untouched
    assert "memory" in recovery.explanation
    record = recovery.record()
    assert (
        record["event"] == "recovery"
        and (record["attempt"], record["next_attempt"]) == (1, 2)
        and record["kind"] == "oom"
    )


def test_oom_with_every_memory_setting_at_its_limit_stops_with_advice(tiny_local_ref):
    config = ForgeConfig.model_validate(
        {
            "model": {"ref": tiny_local_ref, "max_length": 256},
            "training": {"micro_batch_size": 1, "gradient_checkpointing": True, "method": "lora"},
            "hardware": {"gpu_arch": "none"},
        }
    )
    with pytest.raises(ForgeError) as caught:
        _plan(Failure("oom", "Out of memory", ExitCode.OOM, step=1), config)
    assert "ran out of memory" in caught.value.message and "already at its limit" in caught.value.message
    assert "more memory" in caught.value.fix and "forge train --resume r1" in caught.value.fix


def test_nan_halves_the_learning_rate_and_leaves_fp16():
    config = _config(learning_rate=1e-3, precision="fp16", warmup_ratio=0.0)
    recovery = _plan(Failure("nan", "The loss of step 5 is nan", ExitCode.NAN, step=5), config)
    assert recovery.changes["training.learning_rate"] == {"from": 1e-3, "to": 5e-4}
    assert recovery.changes["training.precision"]["to"] in ("bf16", "fp32")
    assert recovery.config.training.learning_rate == 5e-4


def test_a_first_crash_restarts_unchanged():
    config = _config()
    recovery = _plan(Failure("crash", "RuntimeError: boom", 1, step=4, checkpoint_step=2), config)
    assert recovery.changes == {} and recovery.config is config
    assert "last checkpoint" in recovery.explanation


def test_the_same_crash_twice_without_progress_stops():
    first = Failure("crash", "RuntimeError: boom", 1, step=4, checkpoint_step=2)
    again = Failure("crash", "RuntimeError: boom", 1, step=4, checkpoint_step=2)
    with pytest.raises(ForgeError) as caught:
        _plan(again, _config(), recoveries=[{"kind": "crash", "explanation": "restarted"}], previous=first)
    assert "same way twice" in caught.value.message and "RuntimeError: boom" in caught.value.message
    assert caught.value.details == ["recovery 1 (crash): restarted"]


def test_a_crash_after_progress_restarts_again():
    first = Failure("crash", "RuntimeError: boom", 1, step=4, checkpoint_step=2)
    later = Failure("crash", "RuntimeError: boom", 1, step=9, checkpoint_step=8)
    recovery = _plan(later, _config(), recoveries=[{"kind": "crash", "explanation": "x"}], previous=first)
    assert recovery.changes == {}


def test_killed_twice_at_the_same_point_is_treated_as_memory():
    # The kernel's OOM killer sends SIGKILL: the second time without progress, save memory.
    first = classify(-9, None, False, checkpoint_step=5)
    again = classify(-9, None, False, checkpoint_step=5)
    recovery = _plan(again, _config(), recoveries=[{"kind": "killed", "explanation": "x"}], previous=first)
    assert recovery.changes["training.micro_batch_size"] == {"from": 4, "to": 2}


def test_max_recoveries_ends_the_run_with_the_history():
    config = _config(max_recoveries=2)
    done = [{"kind": "oom", "explanation": "first"}, {"kind": "oom", "explanation": "second"}]
    with pytest.raises(ForgeError) as caught:
        _plan(Failure("oom", "Out of memory", ExitCode.OOM, step=3), config, recoveries=done)
    error = caught.value
    assert "training.max_recoveries (2)" in error.message
    assert error.details == ["recovery 1 (oom): first", "recovery 2 (oom): second"]
    assert "training.micro_batch_size: 2" in error.fix and "max_recoveries" in error.fix


def test_config_errors_are_not_retried_and_keep_the_workers_fix_and_code():
    # The worker's error event carries code, message and fix as fields of their own.
    event = {
        "kind": "config",
        "code": "prepared-data-stale",
        "message": "The prepared data was tokenized for another model.",
        "fix": "Run `forge prepare FILE` again.",
        "data": {},
    }
    failure = classify(ExitCode.CONFIG, event, False, checkpoint_step=None)
    assert failure.code == "prepared-data-stale" and failure.fix == "Run `forge prepare FILE` again."
    with pytest.raises(ForgeError) as caught:
        _plan(failure, _config())
    assert "tokenized for another model" in caught.value.message and "Fix:" not in caught.value.message
    assert caught.value.fix.startswith("Run `forge prepare FILE` again")
    assert caught.value.code == ErrorCode.PREPARED_DATA_STALE  # the worker's code survives the supervisor


def test_a_worker_fix_in_the_message_is_not_taken_apart():
    # A fix is only ever read from the event's field: text after "Fix:" in a message stays message.
    failure = Failure("config", "Odd.\nFix: not a field", ExitCode.CONFIG, code="config-invalid")
    with pytest.raises(ForgeError) as caught:
        _plan(failure, _config())
    assert "Fix: not a field" in caught.value.message and "not a field" not in caught.value.fix


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("crash", "OSError: [Errno 28] No space left on device: 'checkpoints/.tmp-step-10'"),
        ("crash", "SafetensorError: Error while serializing: I/O error: File too large (os error 27)"),
    ],
)
def test_disk_full_stops_and_says_the_checkpoint_is_intact(kind, message):
    with pytest.raises(ForgeError) as caught:
        _plan(Failure(kind, message, 1, step=10, checkpoint_step=5), _config())
    assert "ran out of disk space" in caught.value.message
    assert "intact" in caught.value.fix and "forge train --resume r1" in caught.value.fix
    assert caught.value.code == ErrorCode.DISK_FULL


def test_a_disk_full_forge_error_is_recognised_by_its_code_whatever_its_words():
    # training/checkpoint.py's error, reworded: no disk words at all, only the code says it.
    event = {"kind": "config", "code": "disk-full", "message": "Saving step-10 failed.", "fix": "Free space."}
    failure = classify(ExitCode.CONFIG, {**event, "step": 10}, False, checkpoint_step=5)
    with pytest.raises(ForgeError) as caught:
        _plan(failure, _config())
    assert "ran out of disk space" in caught.value.message and "intact" in caught.value.fix
    # ... and the old words without the code are a plain configuration error.
    words = "The disk is full while saving step-10 of the run."
    worded = Failure("config", words, ExitCode.CONFIG, code="usage-invalid")
    with pytest.raises(ForgeError) as caught:
        _plan(worded, _config())
    assert "ran out of disk space" not in caught.value.message


def test_oom_and_nan_are_diagnosed_from_the_code_not_from_the_message():
    oom = {"kind": "oom", "code": "train-out-of-memory", "message": "step failed", "data": {"device": "gpu"}}
    recovery = _plan(classify(ExitCode.OOM, oom, False, checkpoint_step=2), _config())
    assert recovery.changes["training.micro_batch_size"] == {"from": 4, "to": 2}
    assert "GPU's memory" in recovery.explanation
    nan = {"kind": "nan", "code": "train-non-finite", "message": "step 5 went wrong", "step": 5}
    recovery = _plan(classify(ExitCode.NAN, nan, False, checkpoint_step=2), _config())
    assert "training.learning_rate" in recovery.changes


@pytest.fixture
def tiny_local_ref(tmp_path):
    """A local model folder that is in no catalog (so the memory ladder has no smaller model)."""
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return str(folder)


def test_a_worker_killed_by_the_watchdog_is_hung_and_restarts_unchanged_from_its_checkpoint():
    failure = classify(-9, None, False, checkpoint_step=4, silent_seconds=12.5)
    assert failure.kind == "hung" and failure.error_code == ErrorCode.TRAIN_HUNG
    assert failure.data == {"silent_seconds": 12.5}  # not the kernel's OOM killer: no memory change
    recovery = _plan(failure, _config())
    assert recovery.changes == {} and recovery.kind == "hung"
    assert recovery.explanation == (
        "The worker stopped responding for 12.5 s; it was stopped and restarted from step 4."
    )
    with pytest.raises(ForgeError, match="stopped responding"):  # hung again without progress: stop
        _plan(failure, _config(), recoveries=[recovery.record()], previous=failure)
