"""The image's entrypoint: a GPU image checks that the container sees a GPU, then runs the command.

A GPU image started without ``--gpus`` (or without the NVIDIA Container Toolkit) would otherwise train
on the CPU, hours slower, without a word. Here it stops at once and says why. FORGE_ALLOW_NO_GPU=1
lets a command run anyway (``forge docker probe`` reports what the container sees, GPUs or none).
"""

from __future__ import annotations

import os
import shutil
import sys

from forgellm.runtime.archcheck import CAPABILITIES_ENV

ALLOW_NO_GPU_ENV = "FORGE_ALLOW_NO_GPU"


def visible_gpus() -> int | None:
    """How many NVIDIA GPUs NVML shows this container; None when NVML cannot tell (no driver mounted)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None


def gpu_problem() -> str | None:
    """Why this container cannot do the GPU image's work, or None (a CPU image never has one)."""
    if not os.environ.get(CAPABILITIES_ENV, "").strip() or os.environ.get(ALLOW_NO_GPU_ENV) == "1":
        return None
    count = visible_gpus()
    if count:
        return None
    return (
        "forge: this is a GPU image, but the container sees no NVIDIA GPU "
        f"({'no NVIDIA driver is visible' if count is None else 'the driver shows no GPU'}).\n"
        "forge: start it with GPUs (`docker run --gpus all ...`; Forge's docker runtime does this), and check "
        "that the NVIDIA Container Toolkit is installed (`nvidia-ctk --version`). For CPU work use forge:cpu."
    )


def main(argv: list[str]) -> int:
    problem = gpu_problem()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 3
    command = argv or ["forge", "--help"]
    program = shutil.which(command[0]) or command[0]
    try:
        os.execv(program, command)
    except OSError as exc:
        print(f"forge: cannot run {command[0]!r} in the container: {exc.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
