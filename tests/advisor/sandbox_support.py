"""What the sandbox tests share: small limits, the bubblewrap marker, a runner of script texts."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from forgellm.advisor.sandbox import SandboxLimits, run_sandboxed

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (`bwrap`) is not installed: `apt-get install bubblewrap`"
)
# Small limits (seconds, a few hundred MiB, 16 processes) keep the tests fast and contain a fork
# bomb long before it could disturb the machine.
FAST = SandboxLimits(
    cpu_seconds=2,
    wall_seconds=8,
    memory_bytes=512 * 1024**2,
    max_processes=16,
    max_output_bytes=16 * 1024**2,
    tmp_bytes=8 * 1024**2,
    work_bytes=24 * 1024**2,
    max_files=50,
)


def make_job(tmp_path: Path, runtime: str = "auto"):
    """A fresh working folder, one CSV input, and a function running a script text on them
    (in ``runtime`` unless a call names another)."""
    work = tmp_path / "work"
    work.mkdir()
    data = tmp_path / "tickets.csv"
    data.write_text("question,answer\nWhere is my order?,It ships tomorrow.\nCan I pay by card?,Yes.\n")

    def run(code: str, limits: SandboxLimits = FAST, inputs: list[Path] | None = None, **kwargs):
        script = tmp_path / "script_source.py"
        script.write_text(textwrap.dedent(code))
        kwargs.setdefault("runtime", runtime)
        return run_sandboxed(script, work, [data] if inputs is None else inputs, limits=limits, **kwargs)

    run.work, run.data, run.root, run.runtime = work, data, tmp_path, runtime
    return run
