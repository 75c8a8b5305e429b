"""Disk space: what weights take per parameter, the one check before writing them, and the one
pattern that recognises a full disk in an error message.

Every stage that writes weights (the model download or conversion, the GGUF export, the quantizer)
checks here first, so a full disk is said before minutes of work, in the same words everywhere.
"""

from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path

from forgellm.errors import ErrorCode, ForgeError
from forgellm.units import human_bytes

# Bytes per parameter of each way of storing weights: exact for f32/f16/bf16 and llama.cpp's block
# types q8_0 (34 bytes per 32 weights), q5_0 (22/32) and q4_0 (18/32); llama.cpp's average bits per
# weight / 8 for the K-quants; NF4 with its double-quantised absmax (Dettmers et al. 2023, QLoRA §2).
BYTES_PER_PARAM: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 8.5 / 8,
    "q6_k": 6.6 / 8,
    "q5_k_m": 5.7 / 8,
    "q5_0": 5.5 / 8,
    "q4_k_m": 4.9 / 8,
    "q4_0": 4.5 / 8,
    "q3_k_m": 3.9 / 8,
    "q2_k": 3.4 / 8,
    "nf4": 4.127 / 8,
}
# torch / config.json / forge.yaml names of the same float types.
_DTYPE_NAMES = {"float32": "f32", "fp32": "f32", "float16": "f16", "fp16": "f16", "bfloat16": "bf16"}

# A full disk (ENOSPC, 28), a file-size limit (EFBIG, 27) or a quota (EDQUOT), as Python, the OS,
# safetensors' Rust I/O and Forge's own checkpoint writer word them.
DISK_FULL = re.compile(
    r"No space left on device|\bENOSPC\b|\[Errno 2[78]\]|os error 2[78]\b|Disk quota exceeded|\bEDQUOT\b"
    r"|File too large|disk is full",
    re.IGNORECASE,
)

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_disk_full(error: BaseException | str) -> bool:
    """Whether an exception (by its errno, else its words) or a log text says the disk is full."""
    if isinstance(error, BaseException) and getattr(error, "errno", None) in DISK_FULL_ERRNOS:
        return True
    return DISK_FULL.search(str(error)) is not None


def bytes_per_param(dtype: str | None, default: str = "f32") -> float:
    """Bytes per parameter of a storage type (``q4_k_m``) or a float dtype name (``bfloat16``); an unknown
    or missing name counts as ``default``."""
    name = str(dtype or "").lower()
    name = _DTYPE_NAMES.get(name, name)
    return BYTES_PER_PARAM.get(name, BYTES_PER_PARAM[default])


def require_free_space(folder: Path, needed: float, what: str, fix: str) -> None:
    """Raise a ForgeError when ``folder``'s disk has less than ``needed`` bytes free for ``what``."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ForgeError(
            f"Not enough disk space in {folder} for {what}: it needs about {human_bytes(needed)}, "
            f"{human_bytes(free)} are free.",
            fix=fix,
            code=ErrorCode.DISK_FULL,
            data={"path": str(folder), "needed": int(needed), "free": free},
        )
