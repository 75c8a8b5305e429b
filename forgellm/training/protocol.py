"""The contract between `forge train`'s supervisor (parent) and its worker (child process). The run
folder's file names live in forgellm.project.layout (`RunLayout`), its records in forgellm.project.

The supervisor creates ``runs/<run-id>/`` and writes there:
  run.json      RunSpec: where the prepared data, the model and the project are; the run id.
  config.yaml   the effective ForgeConfig the worker trains with (a snapshot; healing rewrites it
                between attempts, never while a worker runs).
It starts ``python -m forgellm.training.worker RUN_DIR [--resume CHECKPOINT_DIR]``.

Heartbeat: every event the worker prints, and the time of ``.heartbeat`` in the run folder, which the
training loop touches (at most once a second) before each micro-batch, each evaluation batch and around
each checkpoint. A worker silent for longer than the watchdog's limit (``WATCHDOG_ENV``) is killed and
restarted from its last checkpoint, as a failure of kind ``hung``.

The worker prints one JSON object per line on stdout (``Event``; nothing else goes to stdout) and
logs free text on stderr. It writes checkpoints (``checkpoints/step-<N>/``, atomically: a temp
folder renamed when complete) and ``best/``; the supervisor writes ``metrics.jsonl`` (every event
plus its own ``recovery`` events), ``logs/``, ``summary.json`` and ``loss.png``.

Exit codes tell the supervisor what to do next (``ExitCode``). Faults can be injected for tests and
drills with ``FORGE_FAULT`` (``FAULT_ENV``): they trigger the real failure (a real
``torch.OutOfMemoryError`` raised in the forward or backward pass, in optimizer.step, in evaluation or
mid-checkpoint; real NaN losses or gradients; a real abrupt exit; a real hang), so the recovery code
under test is the production one. ``MEMORY_LIMIT_ENV`` applies real memory pressure.
"""

from __future__ import annotations

import json
from enum import IntEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forgellm.errors import ForgeError

# KIND[:POINT]@STEP, comma-separated for several: e.g. "oom:backward@3,crash:checkpoint@4,hang@5"
# (kinds oom | nan | crash | kill | hang; points step | forward | backward | optimizer | eval | checkpoint,
# see worker.py; "oom@3" is the forward pass, "crash@4" the start of the step).
FAULT_ENV = "FORGE_FAULT"
# In a group of processes, the rank whose FORGE_FAULT fires (default 0).
FAULT_RANK_ENV = "FORGE_FAULT_RANK"
# Drills of real memory pressure: the supervisor starts the worker with RLIMIT_DATA at this many bytes,
# so an allocation past it really fails (torch: "DefaultCPUAllocator: can't allocate memory").
MEMORY_LIMIT_ENV = "FORGE_WORKER_MEMORY_LIMIT"
# Seconds without a heartbeat after which the supervisor's watchdog kills the worker as hung; unset:
# the longer of WATCHDOG_MIN_SECONDS and WATCHDOG_STEP_FACTOR times the longest silence seen between beats.
WATCHDOG_ENV = "FORGE_WATCHDOG_SECONDS"
WATCHDOG_MIN_SECONDS = 600.0
WATCHDOG_STEP_FACTOR = 20
# Before its `start` event the worker loads the model and the data, which beats nothing: it gets this long.
WATCHDOG_STARTUP_SECONDS = 1800.0

EVENT_KINDS = ("start", "step", "eval", "checkpoint", "warning", "error", "end")
ERROR_KINDS = ("oom", "nan", "crash", "data", "config")
END_REASONS = ("completed", "max_steps", "early_stopping", "overfitting", "time_budget", "interrupted")


class ExitCode(IntEnum):
    OK = 0  # finished (any END_REASONS except interrupted)
    FAILED = 1  # an error the worker could not classify (traceback on stderr, "error" event sent)
    CONFIG = 2  # bad input: no data, wrong tokenizer, impossible settings — healing cannot help
    OOM = 3  # out of memory (GPU or CPU); a checkpoint may exist from before
    NAN = 4  # non-finite loss or exploding grad norm; nothing after the last good checkpoint is kept
    INTERRUPTED = 130  # SIGINT/SIGTERM: a checkpoint was saved, then the worker stopped


def event(kind: str, /, **fields: Any) -> str:
    """One event line as the worker prints it."""
    assert kind in EVENT_KINDS, kind
    return json.dumps({"event": kind, **fields}, ensure_ascii=False, allow_nan=False, default=str)


def error_event(kind: str, error: ForgeError, *, step: int | None = None, traceback: str | None = None) -> str:
    """The `error` event of a ForgeError: its code, message, fix, details and data travel as fields of
    their own, so the supervisor never has to take the error's text apart."""
    assert kind in ERROR_KINDS, kind
    return event("error", kind=kind, **error.to_dict(), step=step, traceback=traceback)


def parse_event(line: str) -> dict[str, Any] | None:
    """An event from a stdout line; None for anything else (a library that printed to stdout)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and data.get("event") in EVENT_KINDS else None


# Fields of each event kind (all JSON numbers are plain floats/ints; missing values are null):
#   start:      step (resumed from, 0 when fresh), total_steps, epochs, device, precision, method, stage,
#               packing, trainable_params, total_params, train_examples, val_examples, tokens_per_epoch,
#               max_length, micro_batch_size, gradient_accumulation, learning_rate, resumed_from (path or null)
#   step:       step, epoch (float), loss, lr, grad_norm, tokens (processed, padding included),
#               real_tokens (non-padding), tokens_per_s (real), memory_bytes (peak so far), eta_s
#   eval:       step, val_loss, best_val_loss, improved (bool), train_loss (recent mean)
#   checkpoint: step, path, reason (interval | signal | end | best)
#   warning:    kind (overfitting | grad_norm | time_budget | max_length | other), message, step;
#               max_length also has cut: {prepared_max_length, max_length, cut, pieces_added,
#               lost_stop_token, dropped} (examples cut to a run's max_length below the prepared one)
#   error:      kind (ERROR_KINDS), code (forgellm.errors.ErrorCode), message, fix (or null), details (list),
#               data (an object, e.g. {"cause": a library's error text}), step, traceback (last lines)
#   end:        step, reason (END_REASONS), best_val_loss, best_step, final_train_loss, seconds
