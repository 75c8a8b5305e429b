"""Import a .gguf file as a normal Hugging Face folder (safetensors + tokenizer + chat template).

transformers can read a GGUF (`gguf_file=`) and dequantizes it, but refuses to save such a model
("quantized with gguf"), so the weights are copied into a fresh model built from the same config.
The folder appears by atomic rename: a crash or a corrupt file never leaves half a model in the cache.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from forgellm.errors import ErrorCode, ForgeError, cause

Progress = Callable[[str], None]
SOURCE_FILE = "forge_source.json"


def check_gguf(path: Path) -> dict[str, object]:
    """Read the GGUF header and tensor table; raise a clear error for anything unreadable."""
    if not path.is_file():
        raise ForgeError(
            f"GGUF file not found: {path}.",
            fix="Check the path; it must point to a .gguf file.",
            code=ErrorCode.FILE_NOT_FOUND,
            data={"path": str(path)},
        )
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        arch_field = reader.fields.get("general.architecture")
        arch = bytes(arch_field.parts[arch_field.data[0]]).decode() if arch_field else None
        # Every tensor's bytes must lie inside the file; a truncated download fails here.
        size = path.stat().st_size
        for tensor in reader.tensors:
            if tensor.data_offset + tensor.n_bytes > size:
                raise ValueError(f"tensor {tensor.name} extends past the end of the file")
    except ForgeError:
        raise
    except Exception as exc:  # the gguf reader raises many kinds for damaged files
        raise ForgeError(
            f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc}).",
            fix="The file is damaged or incomplete: download it again, or pass another model.",
            code=ErrorCode.WEIGHTS_DAMAGED,
            data={"cause": cause(exc)},
        ) from None
    if not arch:
        raise ForgeError(
            f"{path} has no `general.architecture` entry.",
            fix="Use a GGUF written by llama.cpp tools.",
            code=ErrorCode.MODEL_PATH_INVALID,
        )
    return {"architecture": arch, "tensors": len(reader.tensors), "bytes": size}


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _convert_into(gguf_path: Path, target: Path, progress: Progress) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    # transformers draws its own tqdm bar on stderr during GGUF reads; the caller shows our progress instead.
    progress(f"Reading tokenizer from {name}")
    with contextlib.redirect_stderr(io.StringIO()):
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    progress(f"Dequantizing weights of {name} (about 30 s per 100M parameters on 2 cores)")
    with contextlib.redirect_stderr(io.StringIO()):
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    # The saved folder holds plain float weights: drop the marker that says "still a GGUF".
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    progress("Copying weights into a plain model")
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    fresh.generation_config = loaded.generation_config
    progress("Writing safetensors and tokenizer")
    fresh.save_pretrained(target)
    tokenizer.save_pretrained(target)


def import_gguf(gguf_path: str | Path, dest: str | Path, progress: Progress | None = None) -> Path:
    """Convert `gguf_path` into the HF folder `dest` once; later calls return the existing folder."""
    gguf_path, dest = Path(gguf_path).resolve(), Path(dest)
    if (dest / SOURCE_FILE).exists():
        return dest
    progress = progress or (lambda _message: None)
    from filelock import FileLock

    locks = dest.parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / f"{dest.name}.lock")):
        if (dest / SOURCE_FILE).exists():  # another process finished it while we waited
            return dest
        header = check_gguf(gguf_path)
        _quiet_transformers()
        tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _convert_into(gguf_path, tmp, progress)
            record = {
                "gguf": str(gguf_path),
                "gguf_bytes": header["bytes"],
                "architecture": header["architecture"],
                "converted_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            if dest.exists():  # a leftover without its completion record: replace it
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        except ForgeError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ForgeError(
                f"Could not convert {gguf_path.name} to a Hugging Face model ({type(exc).__name__}: {exc}).",
                fix="transformers reads GGUF files of common architectures (llama, qwen2, mistral, phi3, "
                "gemma2...); for others, pass the original Hugging Face folder or hub id instead.",
                code=ErrorCode.MODEL_LOAD_FAILED,
                data={"cause": cause(exc)},
            ) from None
    progress(f"Model ready in {dest}")
    return dest
