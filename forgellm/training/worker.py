"""The worker process: ``python -m forgellm.training.worker RUN_DIR [--resume CHECKPOINT_DIR]``.

Its stdout carries protocol events only: the real stdout is kept for events and file descriptor 1
is pointed at stderr, so whatever a library prints (Python or C) lands in the log, not the stream.
SIGINT/SIGTERM finish the current step, save a checkpoint and exit with 130.

``FORGE_FAULT`` injects real failures for tests and drills (see protocol.py); each fires once per
run folder, recorded in ``.faults-fired`` before it fires, so the restarted attempt goes on.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import torch

from forgellm.errors import ErrorCode, ForgeError
from forgellm.project.layout import RunLayout
from forgellm.training.protocol import FAULT_ENV, ExitCode, error_event

FAULT_KINDS = ("oom", "nan", "crash", "kill")


class InjectedFaults:
    """Faults from ``FORGE_FAULT`` (e.g. "oom@3,kill@5"): the step each kind fires in, once per run dir."""

    def __init__(self, spec: str, run_dir: Path) -> None:
        self.record = RunLayout(run_dir).faults_fired
        self.planned = parse_faults(spec)
        fired = set(self.record.read_text(encoding="utf-8").split()) if self.record.exists() else set()
        self.planned = {f for f in self.planned if f"{f[0]}@{f[1]}" not in fired}

    def _take(self, kind: str, step: int) -> bool:
        if (kind, step) not in self.planned:
            return False
        self.planned.discard((kind, step))
        with open(self.record, "a", encoding="utf-8") as handle:  # recorded before firing: kill leaves no later chance
            handle.write(f"{kind}@{step}\n")
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def at_step(self, step: int) -> None:
        if self._take("crash", step):
            print(f"injected fault: crash in step {step}", file=sys.stderr, flush=True)
            os._exit(1)
        if self._take("kill", step):
            print(f"injected fault: SIGKILL in step {step}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    def in_forward(self, step: int) -> None:
        if self._take("oom", step):
            raise torch.OutOfMemoryError(f"injected fault: out of memory in the forward pass of step {step}")

    def loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        return loss * float("nan") if self._take("nan", step) else loss


def parse_faults(spec: str) -> set[tuple[str, int]]:
    """"oom@3, nan@5" -> {("oom", 3), ("nan", 5)}; anything malformed is a programming error of the drill."""
    faults = set()
    for item in filter(None, (part.strip() for part in spec.split(","))):
        kind, _, step = item.partition("@")
        if kind not in FAULT_KINDS or not step.isdigit():
            raise ValueError(f"{FAULT_ENV}: '{item}' is not KIND@STEP with KIND in {FAULT_KINDS}")
        faults.add((kind, int(step)))
    return faults


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forgellm.training.worker")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", type=Path, default=None, help="checkpoint folder to continue from")
    args = parser.parse_args(argv)
    emit = event_stream()
    stop = StopOnSignal()
    try:
        faults = InjectedFaults(os.environ.get(FAULT_ENV, ""), args.run_dir)
    except ValueError as exc:
        emit(error_event("config", ForgeError(str(exc), code=ErrorCode.USAGE_INVALID)))
        return ExitCode.CONFIG
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from forgellm.training.loop import train

    return int(train(args.run_dir.resolve(), args.resume, emit, faults=faults, should_stop=stop))


if __name__ == "__main__":
    sys.exit(main())
