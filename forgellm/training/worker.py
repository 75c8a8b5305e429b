"""The worker process: ``python -m forgellm.training.worker RUN_DIR [--resume CHECKPOINT_DIR]``.

Its stdout carries protocol events only: the real stdout is kept for events and file descriptor 1
is pointed at stderr, so whatever a library prints (Python or C) lands in the log, not the stream.
SIGINT/SIGTERM finish the current step, save a checkpoint and exit with 130.

``FORGE_FAULT`` injects real failures for tests and drills (see protocol.py); each fires once per
run folder, recorded in ``.faults-fired`` before it fires, so the restarted attempt goes on. In a
group of processes (parallel.py) they fire in the process ``FORGE_FAULT_RANK`` names (default 0).

Of a group, rank 0 prints the events; the others print only their `error` events (with their rank),
so the supervisor learns why a rank failed (an out-of-memory on rank 3 is healed as one).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch

from forgellm.errors import ErrorCode, ForgeError
from forgellm.project.layout import RunLayout
from forgellm.training.protocol import FAULT_ENV, FAULT_RANK_ENV, ExitCode, error_event

# What a fault does: raise a real torch.OutOfMemoryError, make the loss or the gradients NaN, end the
# process (exit 1 or SIGKILL), or stop responding (sleep forever, as a deadlocked worker would).
FAULT_KINDS = ("oom", "nan", "crash", "kill", "hang")
# Where it happens: at the start of the step, in the forward pass, in the backward pass (a gradient hook
# of a trainable weight), inside optimizer.step (its pre-hook), in the evaluation after the step, or in
# the middle of writing the step's checkpoint (the weights are written, the trainer state not yet).
FAULT_POINTS = ("step", "forward", "backward", "optimizer", "eval", "checkpoint")
# "oom@3" and "nan@5" mean the forward pass, "crash@4" the start of the step (the forms before points).
DEFAULT_POINT = {"oom": "forward", "nan": "forward", "crash": "step", "kill": "step", "hang": "step"}
NAN_POINTS = ("forward", "backward")  # a NaN lives in a tensor: the loss or the gradients
_WHERE = {
    "step": "at the start of step {step}",
    "forward": "in the forward pass of step {step}",
    "backward": "in the backward pass of step {step}",
    "optimizer": "in the optimizer step of step {step}",
    "eval": "in the evaluation after step {step}",
    "checkpoint": "while saving the checkpoint of step {step}",
}


class Fault(NamedTuple):
    kind: str
    point: str
    step: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.point}@{self.step}"


class InjectedFaults:
    """Faults from ``FORGE_FAULT`` (e.g. "oom:backward@3,kill@5"), each fired once per run dir."""

    def __init__(self, spec: str, run_dir: Path, *, rank: int = 0, fault_rank: int = 0) -> None:
        self.record = RunLayout(run_dir).faults_fired
        if rank != fault_rank:  # the faults belong to another process of the group
            spec = ""
        fired = self.record.read_text(encoding="utf-8").split() if self.record.exists() else []
        done = {fault for line in fired if (fault := _parse_fault(line, strict=False)) is not None}
        self.planned = parse_faults(spec) - done

    def _take(self, kind: str, point: str, step: int) -> bool:
        fault = Fault(kind, point, step)
        if fault not in self.planned:
            return False
        self.planned.discard(fault)
        with open(self.record, "a", encoding="utf-8") as handle:  # recorded before firing: kill leaves no later chance
            handle.write(f"{fault}\n")
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def fire(self, point: str, step: int) -> None:
        """The faults planned for ``point`` of ``step`` other than NaN (which lives in a tensor)."""
        where = _WHERE[point].format(step=step)
        if self._take("oom", point, step):
            raise torch.OutOfMemoryError(f"injected fault: out of memory {where}")
        if self._take("crash", point, step):
            print(f"injected fault: crash {where}", file=sys.stderr, flush=True)
            os._exit(1)
        if self._take("kill", point, step):
            print(f"injected fault: SIGKILL {where}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        if self._take("hang", point, step):
            print(f"injected fault: hang {where}", file=sys.stderr, flush=True)
            while True:  # the main thread stops for good: no event, no heartbeat, signals only set a flag
                time.sleep(3600)

    def loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        return loss * float("nan") if self._take("nan", "forward", step) else loss

    def gradient(self, step: int, grad: torch.Tensor) -> torch.Tensor:
        """Called from a gradient hook while backward runs: a fault raised here fails loss.backward()."""
        self.fire("backward", step)
        return grad * float("nan") if self._take("nan", "backward", step) else grad


def _parse_fault(item: str, *, strict: bool = True) -> Fault | None:
    head, _, step = item.partition("@")
    kind, _, point = head.partition(":")
    point = point or DEFAULT_POINT.get(kind, "")
    valid = kind in FAULT_KINDS and point in FAULT_POINTS and step.isdigit()
    if valid and kind == "nan" and point not in NAN_POINTS:
        valid = False
    if not valid:
        if strict:
            raise ValueError(
                f"{FAULT_ENV}: '{item}' is not KIND[:POINT]@STEP with KIND in {FAULT_KINDS} and POINT in "
                f"{FAULT_POINTS} (nan only at {NAN_POINTS})"
            )
        return None
    return Fault(kind, point, int(step))


def parse_faults(spec: str) -> set[Fault]:
    """ "oom@3, crash:checkpoint@4" -> {oom:forward@3, crash:checkpoint@4}; anything malformed is a
    programming error of the drill."""
    return {_parse_fault(item) for item in filter(None, (part.strip() for part in spec.split(",")))}  # type: ignore[misc]


class StopOnSignal:
    """SIGINT/SIGTERM ask the loop to stop after the current step (a second signal still waits for it)."""

    def __init__(self) -> None:
        self.requested = False
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, self._handle)

    def _handle(self, number, frame) -> None:
        self.requested = True
        print(f"worker: signal {number} received; stopping after this step", file=sys.stderr, flush=True)

    def __call__(self) -> bool:
        return self.requested


def event_stream():
    """A line-buffered writer on the real stdout; fd 1 then points at stderr for everything else."""
    sys.stdout.flush()
    events = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(line: str) -> None:
        events.write(line + "\n")
        events.flush()

    return emit


def errors_only(emit, rank: int):
    """The events of a rank other than 0: its `error` events, marked with the rank; nothing else."""
    import json

    def emit_errors(line: str) -> None:
        data = json.loads(line)
        if data.get("event") == "error":
            emit(json.dumps({**data, "rank": rank}, ensure_ascii=False, default=str))

    return emit_errors


def die_with_launcher() -> None:
    """A process started by the launcher (torchrun gives each its own session) dies with it: the
    supervisor's kill of the launcher, or its own death, must not leave ranks training on."""
    from forgellm.training.worker_process import die_with_parent

    set_death_signal = die_with_parent(os.getppid())
    if set_death_signal is not None:
        set_death_signal()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forgellm.training.worker")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", type=Path, default=None, help="checkpoint folder to continue from")
    args = parser.parse_args(argv)
    from forgellm.training.parallel import rank_of

    if "LOCAL_RANK" in os.environ:
        die_with_launcher()
    rank = rank_of()
    emit = event_stream()
    if rank != 0:
        emit = errors_only(emit, rank)
    stop = StopOnSignal()
    try:
        fault_rank = int(os.environ.get(FAULT_RANK_ENV, "0") or 0)
        faults = InjectedFaults(os.environ.get(FAULT_ENV, ""), args.run_dir, rank=rank, fault_rank=fault_rank)
    except ValueError as exc:
        emit(error_event("config", ForgeError(str(exc), code=ErrorCode.USAGE_INVALID)))
        return ExitCode.CONFIG
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from forgellm.training.loop import train

    return int(train(args.run_dir.resolve(), args.resume, emit, faults=faults, should_stop=stop))


if __name__ == "__main__":
    sys.exit(main())
