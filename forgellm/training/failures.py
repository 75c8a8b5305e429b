"""How a failure of the training loop becomes its one `error` event (protocol.py) and exit code."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any

import torch

from forgellm.errors import ErrorCode, ForgeError, cause
from forgellm.training.protocol import ExitCode, error_event

Emit = Callable[[str], None]
# torch words a failed CPU allocation as a plain RuntimeError: the library's text is all there is.
CPU_OOM_TEXT = ("can't allocate memory", "not enough memory", "out of memory")


def is_cpu_out_of_memory(exc: BaseException) -> bool:
    return any(text in str(exc).lower() for text in CPU_OOM_TEXT)


def out_of_memory(exc: BaseException, loop: Any) -> ForgeError:
    # Which memory ran out: the accelerator's when the model lives there and torch says so, else RAM.
    model = getattr(loop, "model", None)  # None when the failure came before the model was loaded
    on_gpu = model is not None and model.device.type != "cpu"
    device = "gpu" if on_gpu and isinstance(exc, torch.OutOfMemoryError) else "cpu"
    return ForgeError(
        f"Out of memory: {exc}", code=ErrorCode.TRAIN_OUT_OF_MEMORY, data={"device": device, "cause": cause(exc)}
    )


def crashed(exc: BaseException) -> ForgeError:
    return ForgeError(cause(exc), code=ErrorCode.TRAIN_CRASHED, data={"cause": cause(exc)})


def fail(
    emit: Emit, loop: Any, kind: str, error: ForgeError, code: ExitCode, with_trace=True
) -> ExitCode:
    """One `error` event: the error's code, message, fix and data as fields of their own (protocol.py)."""
    step = loop.progress.step + 1 if loop is not None and loop.started else None
    trace = traceback.format_exc(limit=-8) if with_trace else None
    if with_trace:
        print(traceback.format_exc(), file=sys.stderr)
    emit(error_event(kind, error, step=step, traceback=trace))
    return code
