"""Hugging Face folder -> GGUF file, written with the `gguf` package (no compiled llama.cpp tool needed).

Tensors stream from the safetensors files one at a time: the header (keys and tensor table) is planned
from the safetensors headers alone, then each tensor is read, fixed up for llama.cpp, converted and
written before the next is read, so peak memory is one tensor, not the model. The file appears by
atomic rename when complete; a failure (disk full included) leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgellm.errors import ErrorCode, ForgeError, cause
from forgellm.export.gguf_arch import (
    ArchConfig,
    check_exportable,
    extra_tensors,
    gguf_tensor_name,
    read_arch_config,
    skips_tensor,
    tensor_name_map,
    transform_tensor,
    write_hparams,
)
from forgellm.export.gguf_vocab import read_vocab, write_vocab
from forgellm.hardware.disk import is_disk_full, require_free_space

__all__ = ["K_QUANTS", "NATIVE_QUANTS", "check_exportable", "convert_to_gguf", "parse_quants"]

NATIVE_QUANTS = ("f32", "f16", "bf16", "q8_0")  # no compiled tool needed (gguf package)
# Through llama.cpp's quantizer (llama-cpp-python, extra 'llama'); every other type forge.yaml accepts.
K_QUANTS = ("q4_k_m", "q5_k_m", "q6_k", "q5_0", "q4_0", "q3_k_m", "q2_k")
_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
Progress = Callable[[int, int], None]


def parse_quants(text: str) -> list[str]:
    """ "f16,q8_0" -> ["f16", "q8_0"] (case and spaces ignored, duplicates dropped, order kept)."""
    names = [part.strip().lower() for part in text.replace(" ", ",").split(",") if part.strip()]
    valid = NATIVE_QUANTS + K_QUANTS
    unknown = [name for name in names if name not in valid]
    if unknown or not names:
        what = (
            f"Unknown GGUF quantization {', '.join(repr(n) for n in unknown)}." if unknown else "No quantization given."
        )
        raise ForgeError(
            what,
            fix=f"Use a comma-separated list of: {', '.join(valid)} (e.g. 'f16,q8_0').",
            code=ErrorCode.USAGE_INVALID,
        )
    return list(dict.fromkeys(names))


@dataclass
class _TensorPlan:
    """One tensor of the output: where it comes from and how it is stored."""

    name: str
    shape: tuple[int, ...]
    qtype: Any  # gguf.GGMLQuantizationType
    hf_name: str | None = None
    source: Any = None  # an open safetensors handle
    data: Any = None  # generated tensors (rope factors) are small and held as numpy arrays


def _file_type(quant: str) -> tuple[Any, Any]:
    """quant -> (gguf.LlamaFileType for general.file_type, GGMLQuantizationType of 2-D weights)."""
    import gguf

    types = {
        "f32": (gguf.LlamaFileType.ALL_F32, gguf.GGMLQuantizationType.F32),
        "f16": (gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16),
        "bf16": (gguf.LlamaFileType.MOSTLY_BF16, gguf.GGMLQuantizationType.BF16),
        "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0),
    }
    return types[quant]


def _tensor_qtype(name: str, shape: Sequence[int], target: Any) -> Any:
    """As llama.cpp's converter: 1-D tensors, norms and biases stay F32; rows that do not split into
    whole quantization blocks fall back to F16."""
    import gguf

    kinds = gguf.GGMLQuantizationType
    if len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        return kinds.F32
    block_size = gguf.GGML_QUANT_SIZES[target][0]
    if shape[-1] % block_size:
        return kinds.F16
    return target


def _safetensors_files(hf_dir: Path) -> list[Path]:
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        files = [hf_dir / name for name in sorted(set(weight_map.values()))]
    else:
        files = sorted(p for p in hf_dir.glob("*.safetensors") if p.name != "adapter_model.safetensors")
    if not files:
        raise ForgeError(
            f"No model weights (*.safetensors) in {hf_dir}.",
            fix="Export from a Hugging Face folder saved with safetensors (save_pretrained does by default); "
            "a LoRA adapter must be merged into its base model first.",
            code=ErrorCode.WEIGHTS_MISSING,
        )
    return files


def _open_safetensors(stack: contextlib.ExitStack, path: Path) -> Any:
    from safetensors import safe_open

    try:
        return stack.enter_context(safe_open(str(path), framework="pt"))
    except Exception as exc:  # SafetensorError and OSError for damaged or truncated files
        raise _corrupt(path, exc) from None


def _corrupt(path: Path, exc: BaseException) -> ForgeError:
    return ForgeError(
        f"{path.name} in {path.parent} is not a readable safetensors file ({type(exc).__name__}: {exc}).",
        fix="The weights are damaged or incomplete: export the model again (or re-download it).",
        code=ErrorCode.WEIGHTS_DAMAGED,
        data={"cause": cause(exc)},
    )


def _plan_tensors(ac: ArchConfig, handles: dict[Path, Any], target: Any) -> list[_TensorPlan]:
    name_map = tensor_name_map(ac)
    plans = [
        _TensorPlan(name, tuple(data.shape), _tensor_qtype(name, data.shape, target), data=data)
        for name, data in extra_tensors(ac)
    ]
    for path, handle in handles.items():
        for hf_name in handle.keys():
            if skips_tensor(ac, hf_name):
                continue
            try:
                view = handle.get_slice(hf_name)
                shape, dtype = tuple(view.get_shape()), view.get_dtype()
            except Exception as exc:
                raise _corrupt(path, exc) from None
            if dtype not in _FLOAT_DTYPES:
                raise ForgeError(
                    f"Tensor '{hf_name}' is stored as {dtype}; GGUF export needs float weights (F32/F16/BF16).",
                    fix="Export from the merged full-precision model, not a quantized checkpoint.",
                    code=ErrorCode.EXPORT_UNSUPPORTED,
                )
            name = gguf_tensor_name(name_map, ac, hf_name)
            plans.append(_TensorPlan(name, shape, _tensor_qtype(name, shape, target), hf_name=hf_name, source=handle))

    def order(plan: _TensorPlan) -> tuple[int, int, str]:
        parts = plan.name.split(".")
        if parts[0] == "blk":
            return (1, int(parts[1]), plan.name)
        return (0 if plan.name.startswith(("token_embd", "rope_")) else 2, 0, plan.name)

    return sorted(plans, key=order)


def _byte_size(plan: _TensorPlan) -> tuple[tuple[int, ...], int]:
    """Shape as the writer stores it (bytes per row for block types) and total bytes."""
    import gguf
    import numpy as np

    kinds = gguf.GGMLQuantizationType
    if plan.qtype in (kinds.F32, kinds.F16):
        itemsize = 4 if plan.qtype == kinds.F32 else 2
        return plan.shape, int(np.prod(plan.shape, dtype=np.int64)) * itemsize
    byte_shape = gguf.quant_shape_to_byte_shape(plan.shape, plan.qtype)
    return tuple(byte_shape), int(np.prod(byte_shape, dtype=np.int64))


def _tensor_data(ac: ArchConfig, plan: _TensorPlan) -> Any:
    """Read, fix up and convert one tensor; only this tensor is in memory."""
    import gguf
    import numpy as np
    import torch

    if plan.data is not None:
        array = plan.data
    else:
        try:
            tensor = plan.source.get_tensor(plan.hf_name)
        except Exception as exc:
            raise ForgeError(
                f"Could not read tensor '{plan.hf_name}' ({type(exc).__name__}: {exc}).",
                fix="The weights are damaged or incomplete: export the model again (or re-download it).",
                code=ErrorCode.WEIGHTS_DAMAGED,
                data={"cause": cause(exc)},
            ) from None
        tensor = transform_tensor(ac, plan.hf_name, tensor.to(torch.float32))
        if plan.qtype == gguf.GGMLQuantizationType.F16:  # torch rounds the same way (to nearest even), faster
            return tensor.to(torch.float16).contiguous().numpy()
        array = tensor.contiguous().numpy()
    return np.ascontiguousarray(gguf.quants.quantize(np.asarray(array, dtype=np.float32), plan.qtype))


def _writer_class() -> Any:
    import gguf

    class Writer(gguf.GGUFWriter):
        """gguf's writer refuses empty arrays; the GGUF format allows them (count 0), and a byte-level BPE
        without merges must still carry an (empty) `tokenizer.ggml.merges` for llama.cpp to load it."""

        def _pack_val(self, val: Any, vtype: Any, add_vtype: bool, sub_type: Any = None) -> bytes:
            if vtype == gguf.GGUFValueType.ARRAY and sub_type is not None and len(val) == 0:
                head = self._pack("I", vtype) if add_vtype else b""
                return head + self._pack("I", sub_type) + self._pack("Q", 0)
            return super()._pack_val(val, vtype, add_vtype, sub_type)

    return Writer


def _embedding_rows(plans: Sequence[_TensorPlan], ac: ArchConfig) -> int:
    for plan in plans:
        if plan.name == "token_embd.weight":
            return plan.shape[0]
    raise ForgeError(
        f"The checkpoint has no token embedding matrix (model.embed_tokens) for this {ac.model_type} model.",
        fix="Export from a complete model folder.",
        code=ErrorCode.WEIGHTS_MISSING,
    )


def _write_file(writer: Any, tmp: Path, ac: ArchConfig, plans: Sequence[_TensorPlan], progress: Progress) -> None:
    writer.write_header_to_file(path=tmp)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for done, plan in enumerate(plans, start=1):
        writer.write_tensor_data(_tensor_data(ac, plan))
        progress(done, len(plans))
    writer.flush()
    os.fsync(writer.fout[0].fileno())


def convert_to_gguf(
    hf_dir: Path,
    out_path: Path,
    *,
    quant: str = "f16",
    chat_template: str | None = None,
    eot_tokens: Sequence[str] = (),
    add_bos: bool | None = None,
    model_name: str | None = None,
    progress: Progress | None = None,
) -> Path:
    """Write `out_path` (a .gguf of type `quant`, one of NATIVE_QUANTS) from the plain HF folder `hf_dir`.

    chat_template goes into tokenizer.chat_template; the first of `eot_tokens` that is a single token
    becomes tokenizer.ggml.eot_token_id (llama.cpp stops on it); add_bos sets tokenizer.ggml.add_bos_token
    (None = what the HF tokenizer does on plain text); progress(done_tensors, total_tensors). Tensors are
    streamed; the file appears atomically; a full disk raises ForgeError and leaves nothing behind."""
    hf_dir, out_path = Path(hf_dir), Path(out_path)
    if quant not in NATIVE_QUANTS:
        hint = " K-quants are made from an f16 GGUF with quantize_gguf." if quant in K_QUANTS else ""
        raise ForgeError(
            f"convert_to_gguf writes {', '.join(NATIVE_QUANTS)}, not '{quant}'.{hint}",
            fix=f"Pass one of {', '.join(NATIVE_QUANTS)}.",
            code=ErrorCode.USAGE_INVALID,
        )
    config_file = hf_dir / "config.json"
    if not config_file.is_file():
        raise ForgeError(
            f"No config.json in {hf_dir}.",
            fix="Pass a Hugging Face model folder (save_pretrained).",
            code=ErrorCode.MODEL_PATH_INVALID,
        )
    config = json.loads(config_file.read_text(encoding="utf-8"))
    ac = read_arch_config(config)  # unsupported architectures stop here, before anything is read or written
    import gguf
    import numpy as np

    file_type, target = _file_type(quant)
    with contextlib.ExitStack() as stack:
        handles = {path: _open_safetensors(stack, path) for path in _safetensors_files(hf_dir)}
        plans = _plan_tensors(ac, handles, target)
        vocab = read_vocab(
            hf_dir,
            _embedding_rows(plans, ac),
            config=config,
            eot_tokens=eot_tokens,
            add_bos=add_bos,
            chat_template=chat_template,
        )
        writer = _writer_class()(path=None, arch=ac.arch)
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(model_name or hf_dir.name)
        writer.add_file_type(int(file_type))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        write_hparams(writer, ac)
        write_vocab(writer, vocab)
        total = 0
        for plan in plans:
            byte_shape, nbytes = _byte_size(plan)
            raw = None if plan.qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) else plan.qtype
            dtype = {gguf.GGMLQuantizationType.F32: "float32", gguf.GGMLQuantizationType.F16: "float16"}.get(
                plan.qtype, "uint8"
            )
            writer.add_tensor_info(plan.name, byte_shape, np.dtype(dtype), nbytes, raw_dtype=raw)
            total += nbytes
        out_path.parent.mkdir(parents=True, exist_ok=True)
        require_free_space(
            out_path.parent, total, "the GGUF", "Free some space (or export to another disk) and run the export again."
        )
        tmp = out_path.parent / f".{out_path.name}.tmp-{os.getpid()}"
        try:
            _write_file(writer, tmp, ac, plans, progress or (lambda _done, _total: None))
            writer.close()
            os.replace(tmp, out_path)
        except BaseException as exc:
            writer.close()
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise _write_error(exc, out_path, total) from None
            raise
    return out_path


def _write_error(exc: OSError, out_path: Path, size: int) -> ForgeError:
    if is_disk_full(exc):
        return ForgeError(
            f"The disk filled up while writing {out_path.name} ({size / 1e9:.2f} GB needed); nothing was kept.",
            fix=f"Free some space in {out_path.parent} (or export to another disk) and run the export again.",
            code=ErrorCode.DISK_FULL,
            data={"path": str(out_path), "cause": cause(exc)},
        )
    return ForgeError(
        f"Could not write {out_path} ({exc.strerror or exc}).",
        fix="Check that the folder is writable and the disk is healthy, then run the export again.",
        code=ErrorCode.WRITE_FAILED,
        data={"path": str(out_path), "cause": cause(exc)},
    )
