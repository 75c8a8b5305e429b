"""The contract between `forge train`'s supervisor (parent) and its worker (child process).

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
from dataclasses import asdict, dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forgellm.errors import ForgeError

RUN_SPEC = "run.json"
RUN_CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
BEST = "best"
SUMMARY = "summary.json"
LOSS_PLOT = "loss.png"
LOGS = "logs"
TRAINER_STATE = "trainer_state.pt"  # inside a checkpoint: optimizer, scheduler, RNG, data position, history
FAULT_ENV = "FORGE_FAULT"  # e.g. "oom@3", "nan@5", "crash@4", "kill@4"; comma-separated for several
FAULTS_FIRED = ".faults-fired"  # in the run dir: each injected fault fires once per run, not per attempt

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


@dataclass(frozen=True)
class RunSpec:
    """What the worker needs besides the config: absolute paths, so it can run from any folder."""

    run_id: str
    project_dir: str
    prepared_dir: str  # data/prepared/<fingerprint>/ with train/val/test .parquet
    model_dir: str  # a Hugging Face folder (from forgellm.models.loading.chat_setup)
    tokenizer_id: str  # manifest's tokenizer id the data was prepared with

    def save(self, run_dir: Path) -> None:
        (run_dir / RUN_SPEC).write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, run_dir: Path) -> RunSpec:
        return cls(**json.loads((run_dir / RUN_SPEC).read_text(encoding="utf-8")))


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
#               micro_batch_size, gradient_accumulation, learning_rate, resumed_from (path or null)
#   step:       step, epoch (float), loss, lr, grad_norm, tokens (processed, padding included),
#               real_tokens (non-padding), tokens_per_s (real), memory_bytes (peak so far), eta_s
#   eval:       step, val_loss, best_val_loss, improved (bool), train_loss (recent mean)
#   checkpoint: step, path, reason (interval | signal | end | best)
#   warning:    kind (overfitting | grad_norm | time_budget | other), message, step
#   error:      kind (ERROR_KINDS), code (forgellm.errors.ErrorCode), message, fix (or null), details (list),
#               data (an object, e.g. {"cause": a library's error text}), step, traceback (last lines)
#   end:        step, reason (END_REASONS), best_val_loss, best_step, final_train_loss, seconds
