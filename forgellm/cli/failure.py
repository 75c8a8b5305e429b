"""What the CLI says when a command fails: the error, and — where the failure is a known one — the
rules advisor's diagnosis (a plain explanation and the forge.yaml change that fixes it).

The diagnosis is offline and deterministic (no advisor server is asked from an error handler), and
it must never make things worse: any problem while diagnosing is swallowed and the plain error shown.
"""

from __future__ import annotations

import os
import traceback
from typing import Any

from forgellm.errors import ForgeError


def error_label(exc: ForgeError) -> str:
    """``Error [code]:`` in rich markup: the code is what to search for or report, the words may change."""
    return f"[bold red]Error \\[{exc.code}]:[/]"


def diagnose(stage: str, exc: BaseException) -> Any | None:
    """The rules advisor's Fix for ``exc`` raised by command ``stage``, or None."""
    try:
        from forgellm.advisor.diagnosis import diagnose_failure
        from forgellm.config.schema import ForgeConfig

        config = _project_config() or ForgeConfig()
        if isinstance(exc, ForgeError):
            # Its code and data say what it is; only a library exception it wraps is text to classify.
            wrapped = exc.__cause__ or exc.__context__
            wrapped = None if isinstance(wrapped, ForgeError) else wrapped
            tail = "".join(traceback.format_exception(wrapped)[-20:]) if wrapped is not None else ""
            cause = str(exc.data.get("cause") or "")
            return diagnose_failure(stage, cause, tail, config, code=exc.code, data=exc.data)
        tail = "".join(traceback.format_exception(exc)[-20:])
        return diagnose_failure(stage, f"{type(exc).__name__}: {exc}", tail, config)
    except Exception:  # a diagnosis is a bonus; it never hides the original error
        return None


def _project_config() -> Any | None:
    from forgellm.config.io import load_config
    from forgellm.project import find_project

    root = find_project(os.getcwd())
    if root is None:
        return None
    try:
        return load_config(root).config
    except ForgeError:
        return None


def print_diagnosis(fix: Any, err_console: Any) -> None:
    err_console.print(f"[bold]Likely cause:[/] {fix.explanation}", soft_wrap=True)
    if fix.changes:
        changes = ", ".join(f"{c.key}: {c.value}" for c in fix.changes)
        err_console.print(f"[bold]Fix:[/] set {changes} in forge.yaml, then run the command again.", soft_wrap=True)
    if fix.advice:
        err_console.print(f"[bold]Advice:[/] {fix.advice}", soft_wrap=True)


def is_environment_failure(exc: BaseException) -> bool:
    """Failures of the machine rather than bugs in Forge: memory, disk, network."""
    return isinstance(exc, (MemoryError, ConnectionError, TimeoutError)) or (
        isinstance(exc, OSError) and exc.errno is not None and exc.errno in (28, 122)  # ENOSPC, EDQUOT
    )
