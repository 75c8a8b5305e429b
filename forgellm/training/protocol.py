"""The contract between `forge train`'s supervisor (parent) and its worker (child process). The run
folder's file names live in forgellm.project.layout (`RunLayout`), its records in forgellm.project.

The supervisor creates ``runs/<run-id>/`` and writes there:
  run.json      RunSpec: where the prepared data, the model and the project are; the run id.
  config.yaml   the effective ForgeConfig the worker trains with (a snapshot; healing rewrites it
                between attempts, never while a worker runs).
It starts ``python -m forgellm.training.worker RUN_DIR [--resume CHECKPOINT_DIR]``.

The worker prints one JSON object per line on stdout (``Event``; nothing else goes to stdout) and
logs free text on stderr. It writes checkpoints (``checkpoints/step-<N>/``, atomically: a temp
folder renamed when complete) and ``best/``; the supervisor writes ``metrics.jsonl`` (every event
plus its own ``recovery`` events), ``logs/``, ``summary.json`` and ``loss.png``.

Exit codes tell the supervisor what to do next (``ExitCode``). Faults can be injected for tests and
drills with ``FORGE_FAULT`` (``FAULT_ENV``): they trigger the real failure (a real
``torch.OutOfMemoryError`` raised inside the step, a real NaN loss, a real abrupt exit), so the
recovery code under test is the production one.
"""

from __future__ import annotations

import json
from enum import IntEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forgellm.errors import ForgeError

FAULT_ENV = "FORGE_FAULT"  # e.g. "oom@3", "nan@5", "crash@4", "kill@4"; comma-separated for several

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
