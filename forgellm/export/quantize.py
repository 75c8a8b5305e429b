"""K-quants (q4_k_m, q5_k_m, q6_k) of a GGUF through llama.cpp's own quantizer (llama-cpp-python).

The `gguf` package writes F32/F16/BF16/Q8_0 itself; the K-quant formats need llama.cpp's importance-aware
block search, so they are made from an f16 GGUF by `llama_model_quantize`. llama-cpp-python is an
optional extra compiled at install time; without it the user gets the exact install command.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from forgellm.errors import ErrorCode, ForgeError, cause
from forgellm.hardware.disk import bytes_per_param, require_free_space

# Portable build flags: a native (-march=native) build segfaulted at the first evaluation on our CI CPUs.
LLAMA_CPP_INSTALL = "CMAKE_ARGS=\"-DGGML_NATIVE=OFF -DGGML_AVX512=OFF\" pip install 'forgellm[llama]'"
_FTYPE_NAMES = {
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K",
}


def require_llama_cpp(purpose: str = "This") -> Any:
    """Import llama_cpp, or raise ForgeError with the command that installs it."""
    try:
        import llama_cpp
    except ImportError:
        raise ForgeError(
            f"{purpose} needs llama-cpp-python, which is not installed.",
            fix=f"Install it (it compiles llama.cpp, a few minutes): {LLAMA_CPP_INSTALL}",
            code=ErrorCode.DEPENDENCY_MISSING, data={"package": "llama-cpp-python"},
        ) from None
    return llama_cpp


@contextlib.contextmanager
def quiet_llama_cpp() -> Iterator[None]:
    """llama-cpp-python routes llama.cpp's log through this logger; keep only errors while we work."""
    logger = logging.getLogger("llama-cpp-python")
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)


@contextlib.contextmanager
def _c_output_to(log: Path) -> Iterator[None]:
    """llama.cpp's quantizer prints a line per tensor (hundreds of "falling back" warnings for models whose
    rows are not multiples of 256) straight to the C stderr: send them to a file, shown only on failure."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    with open(log, "wb") as handle:
        os.dup2(handle.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _check_free_space(source: Path, out_dir: Path, quant: str) -> None:
    # The source is (mostly) 16-bit: its parameter count times the quant's bytes per parameter.
    needed = source.stat().st_size / bytes_per_param("f16") * bytes_per_param(quant)
    require_free_space(
        out_dir, needed, f"the {quant} GGUF", "Free some space (or export to another disk) and run the export again."
    )


def quantize_gguf(source_gguf: Path, out_path: Path, quant: str) -> Path:
    """Write `out_path`, the `quant` (one of K_QUANTS) version of `source_gguf` (an f16/bf16/f32 GGUF)."""
    source_gguf, out_path = Path(source_gguf), Path(out_path)
    if quant not in _FTYPE_NAMES:
        raise ForgeError(
            f"quantize_gguf makes {', '.join(_FTYPE_NAMES)}, not '{quant}'.",
            fix="f32/f16/bf16/q8_0 are written directly by convert_to_gguf.",
            code=ErrorCode.USAGE_INVALID,
        )
    if not source_gguf.is_file():
        raise ForgeError(
            f"GGUF file not found: {source_gguf}.",
            fix="Convert the model to an f16 GGUF first.",
            code=ErrorCode.FILE_NOT_FOUND,
            data={"path": str(source_gguf)},
        )
    llama_cpp = require_llama_cpp(f"The {quant} quantization")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _check_free_space(source_gguf, out_path.parent, quant)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, _FTYPE_NAMES[quant])
    tmp = out_path.parent / f".{out_path.name}.tmp-{os.getpid()}"
    log = out_path.parent / f".{out_path.name}.log-{os.getpid()}"
    try:
        with quiet_llama_cpp(), _c_output_to(log):
            status = llama_cpp.llama_model_quantize(str(source_gguf).encode(), str(tmp).encode(), ctypes.byref(params))
        if status != 0 or not tmp.is_file():
            said = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
            raise ForgeError(
                f"llama.cpp could not quantize {source_gguf.name} to {quant} (status {status}"
                + (f": {' / '.join(said)}" if said else "")
                + ").",
                fix="Check that the source GGUF loads in llama.cpp and that the disk has room, then export again.",
                code=ErrorCode.QUANTIZE_FAILED,
            )
        os.replace(tmp, out_path)
    except OSError as exc:
        raise ForgeError(
            f"Could not write {out_path} ({exc.strerror or exc}).",
            fix="Check that the folder is writable and has free space, then run the export again.",
            code=ErrorCode.WRITE_FAILED,
            data={"path": str(out_path), "cause": cause(exc)},
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
        log.unlink(missing_ok=True)
    return out_path
