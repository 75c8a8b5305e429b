"""Self-healing: what a failed training attempt means and what the next attempt changes.

The worker's exit code says what went wrong (protocol.ExitCode); the rules of
forgellm.advisor.diagnosis turn the failure into a forge.yaml change (OOM: smaller micro-batches with
as many examples per update, then the rest of the memory ladder; NaN: a lower learning rate, safer
precision). The decision is pure: the supervisor runs attempts, this module only decides.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field, replace
from typing import Any

from forgellm.config.schema import ForgeConfig
from forgellm.errors import ErrorCode, ForgeError
from forgellm.hardware.disk import is_disk_full
from forgellm.training.protocol import ExitCode

# Failures that another attempt cannot fix: the input is wrong or the disk is full.
NO_RETRY = ("config", "data", "disk")
# The exit code already says what happened when the worker could not send an error event.
_KIND_CODES = {
    "oom": ErrorCode.TRAIN_OUT_OF_MEMORY,
    "nan": ErrorCode.TRAIN_NON_FINITE,
    "killed": ErrorCode.TRAIN_KILLED,
    "hung": ErrorCode.TRAIN_HUNG,
    "crash": ErrorCode.TRAIN_CRASHED,
}


@dataclass(frozen=True)
class Failure:
    """A failed attempt, classified."""

    kind: str  # oom | nan | crash | killed | hung | config | data | disk
    message: str
    exit_code: int
    step: int | None = None
    checkpoint_step: int | None = None  # the newest complete checkpoint when it failed
    code: str | None = None  # the worker's ErrorCode (its error event's `code` field)
    fix: str | None = None  # the worker's own fix for its ForgeError
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def error_code(self) -> ErrorCode | None:
        return ErrorCode(self.code) if self.code else _KIND_CODES.get(self.kind)

    @property
    def cause(self) -> str:
        """Library or OS text the failure carries, which diagnosis may classify; never Forge's own words."""
        if "cause" in self.data:
            return str(self.data["cause"])
        # An event without a code (an older worker) only ever carried a library's text for these kinds.
        return self.message if self.code is None and self.kind in ("oom", "crash") else ""


@dataclass
class Recovery:
    """What the next attempt does differently, and why (one `recovery` record in metrics.jsonl)."""

    kind: str
    failed_attempt: int
    step: int | None
    explanation: str
    config: ForgeConfig
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> {"from": old, "to": new}
    resume_from: str | None = None

    def record(self) -> dict[str, Any]:
        return {
            "event": "recovery",
            "kind": self.kind,
            "attempt": self.failed_attempt,  # like every record: the attempt it belongs to
            "next_attempt": self.failed_attempt + 1,
            "step": self.step,
            "changes": self.changes,
            "explanation": self.explanation,
            "resume_from": self.resume_from,
        }


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def classify(
    exit_code: int,
    error: dict[str, Any] | None,
    ended: bool,
    checkpoint_step: int | None,
    *,
    silent_seconds: float | None = None,
) -> Failure | None:
    """The failure an attempt ended with; None when it finished (exit 0 with an `end` event).
    ``silent_seconds``: the supervisor's watchdog killed the worker after that long without a heartbeat."""
    error = error or {}
    message = str(error.get("message") or "").strip()
    step, reported, code = error.get("step"), error.get("kind"), error.get("code")
    data = dict(error.get("data") or {})
    if exit_code == ExitCode.OK and ended:
        return None
    if silent_seconds is not None:  # its SIGKILL came from the watchdog, not from the kernel's OOM killer
        kind, code = "hung", ErrorCode.TRAIN_HUNG
        data = {"silent_seconds": silent_seconds}
        message = f"the worker stopped responding for {silent_seconds:g} s"
    elif exit_code < 0:
        kind, code = "killed", ErrorCode.TRAIN_KILLED
        data = {"signal": _signal_name(-exit_code), "exit_code": exit_code}
        message = f"the training process was killed by {data['signal']} (exit code {exit_code})"
    elif exit_code == ExitCode.OOM:
        kind = "oom"
    elif exit_code == ExitCode.NAN:
        kind = "nan"
    elif exit_code == ExitCode.CONFIG:
        kind = "data" if reported == "data" else "config"
    elif reported == "data":
        kind = "data"
    else:
        kind = "crash"
        message = message or f"the training process stopped with exit code {exit_code} before finishing"
    return Failure(kind, message or kind, exit_code, step, checkpoint_step, code, error.get("fix"), data)


def _restart_explanation(failure: Failure) -> str:
    if failure.kind == "hung":
        where = f"step {failure.checkpoint_step}" if failure.checkpoint_step is not None else "the start"
        seconds = failure.data.get("silent_seconds")
        return f"The worker stopped responding for {seconds:g} s; it was stopped and restarted from {where}."
    return f"The training process stopped unexpectedly ({failure.message}); continuing from the last checkpoint."


def _changes(before: ForgeConfig, after: ForgeConfig, keys: list[str]) -> dict[str, dict[str, Any]]:
    def value(config: ForgeConfig, key: str) -> Any:
        node: Any = config
        for part in key.split("."):
            node = getattr(node, part)
        return node

    return {key: {"from": value(before, key), "to": value(after, key)} for key in keys}


def plan_recovery(
    failure: Failure,
    config: ForgeConfig,
    *,
    attempt: int,
    recoveries: list[dict[str, Any]],
    previous: Failure | None,
    log_tail: str,
    run_id: str,
    parallel: Any = None,
) -> Recovery:
    """The next attempt's config and explanation; ForgeError when the run should stop instead.
    ``parallel``: the failed attempt's ParallelPlan (training/launch.py) when it ran on several processes."""
    from forgellm.advisor.diagnosis import diagnose_failure
    from forgellm.advisor.fixes import apply_fix

    fix = diagnose_failure("train", failure.cause, log_tail, config, code=failure.error_code, data=failure.data)
    # A library's disk-full text (a crash's cause) or Forge's own code for it.
    disk_full = failure.error_code == ErrorCode.DISK_FULL or is_disk_full(failure.cause)
    if failure.kind in ("crash", "config") and ((fix is not None and fix.problem == "disk") or disk_full):
        failure = replace(failure, kind="disk")  # e.g. a checkpoint that did not fit: retrying fills it again
    resume = f"`forge train --resume {run_id}`"
    if failure.kind in NO_RETRY:
        raise _stop(failure, fix, resume, recoveries)
    limit = config.training.max_recoveries
    if len(recoveries) >= limit:
        raise _stop(failure, fix, resume, recoveries, limit=limit)
    # A crash or kill that repeats without a new checkpoint in between would repeat forever.
    repeated = (
        previous is not None and previous.kind == failure.kind and previous.checkpoint_step == failure.checkpoint_step
    )
    wants_change = failure.kind in ("oom", "nan") or repeated
    if failure.kind == "oom" and (sharded := _shard_further(config, parallel)) is not None:
        return Recovery(failure.kind, attempt, failure.step, sharded[1], sharded[0],
                        _changes(config, sharded[0], ["training.distributed", "training.offload"]))  # fmt: skip
    if not wants_change:
        return Recovery(failure.kind, attempt, failure.step, _restart_explanation(failure), config)
    if fix is None or not fix.changes:
        raise _stop(failure, fix, resume, recoveries, repeated=repeated)
    new_config = apply_fix(config, fix)
    keys = [change.key for change in fix.changes]
    return Recovery(
        failure.kind, attempt, failure.step, fix.explanation, new_config, _changes(config, new_config, keys)
    )


def _shard_further(config: ForgeConfig, parallel: Any) -> tuple[ForgeConfig, str] | None:
    """Out of memory on several GPUs: shard before anything that costs quality. DDP keeps a full copy of
    the model and optimizer on every GPU, FSDP divides them by the GPU count; offload then moves the
    shards to CPU RAM (slow, but no setting of the training itself changes)."""
    if parallel is None or parallel.strategy == "none":
        return None
    training = config.training
    if parallel.strategy == "ddp" and parallel.world_size > 1 and training.method != "qlora":
        change = {"distributed": "fsdp"}
        why = (f"Out of memory with a full copy of the model and optimizer on each of the {parallel.world_size} "
               "GPUs (DDP): the next attempt shards them over the GPUs (FSDP).")  # fmt: skip
    elif parallel.strategy in ("fsdp", "deepspeed") and not parallel.offload:
        change = {"distributed": parallel.strategy, "offload": True}
        why = (f"Out of memory with the model sharded over {parallel.world_size} GPU(s): the next attempt keeps "
               "the shards in CPU RAM (offload; slower).")  # fmt: skip
    else:
        return None
    updated = training.model_copy(update=change)
    return config.model_copy(update={"training": updated}), why


_WHAT = {
    "oom": "ran out of memory",
    "nan": "produced a NaN (not-a-number) loss",
    "crash": "crashed",
    "killed": "was killed",
    "hung": "stopped responding",
    "config": "cannot start with these settings",
    "data": "cannot use the prepared data",
    "disk": "ran out of disk space (or hit a file-size limit)",
}


def _stop(
    failure: Failure,
    fix: Any,
    resume: str,
    recoveries: list[dict[str, Any]],
    *,
    limit: int | None = None,
    repeated: bool = False,
) -> ForgeError:
    """The error that ends a run, with the diagnosis's explanation and what the user can do."""
    what = f"Training {_WHAT.get(failure.kind, 'failed')}"
    where = f" at step {failure.step}" if failure.step is not None else ""
    message = f"{what}{where}: {failure.message}"
    if limit is not None:
        message += f" This is failure {len(recoveries) + 1}; training.max_recoveries ({limit}) recoveries were tried."
    elif repeated:
        message += " It failed the same way twice in a row, and no setting change is known to help."
    if fix is not None:
        message += f" {fix.explanation}"
    details = [f"recovery {i + 1} ({r['kind']}): {r['explanation']}" for i, r in enumerate(recoveries)]
    # The worker's code survives the supervisor: whoever catches this error can still react to it.
    code, data = failure.error_code or ErrorCode.TRAIN_CRASHED, {**failure.data, "step": failure.step}
    if failure.kind == "disk":
        advice = "Free disk space (old runs/ and exports/ folders are safe to delete); the last complete checkpoint "
        fix_text = f"{advice}is intact, so {resume} continues from it."
        return ForgeError(message, code=ErrorCode.DISK_FULL, details=details, fix=fix_text, data=data)
    if failure.kind in ("config", "data"):
        # The worker's ForgeError carries its own fix (the event's `fix` field): it knows best.
        changes = _fix_changes(fix, "forge.yaml")
        advice = failure.fix or (fix.advice if fix is not None else "") or "Correct forge.yaml or the data"
        fix_text = f"{changes or advice.rstrip('.')}; then run `forge train` again."
        return ForgeError(message, code=code, details=details, fix=fix_text, data=data)
    changes = _fix_changes(fix, "the run's config.yaml")
    advice = (fix.advice if fix is not None else "") or "See the worker logs in the run folder for the details."
    fix_text = f"{changes}, then run {resume}." if changes else f"{advice} Then run {resume}."
    if limit is not None and changes:
        fix_text += f" Or raise training.max_recoveries (now {limit}) to let Forge keep adjusting."
    return ForgeError(message, code=code, details=details, fix=fix_text, data=data)


def _fix_changes(fix: Any, where: str) -> str:
    if fix is None or not fix.changes:
        return ""
    return "Set " + ", ".join(f"{c.key}: {c.value}" for c in fix.changes) + f" in {where}"
