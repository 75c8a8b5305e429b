"""GGUF export time vs `save_pretrained` of the same merged model (target: F16 <= 3x).

The merged model is the bundled SmolLM2-135M-Instruct (fp32 safetensors, what `forge export` writes
to merged/). Baseline A: `model.save_pretrained(dir)` (the model already in memory, as it is right
after merging). B: Forge's converter writing a GGUF from that folder (F16, and Q8_0 for reference),
reading the safetensors from disk as `forge export` does. Runs are interleaved A B A B ... and the
ratio is the median of per-pair ratios.

    python benchmarks/export_bench.py [--pairs 5]     # writes benchmarks/results/export_bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "export_bench.json"


def _timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()

    from importlib.metadata import version

    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    from forgellm.export.gguf_convert import convert_to_gguf
    from forgellm.models.resolve import materialize, resolve_model

    model_dir = materialize(resolve_model("smollm2-135m"))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    rows: dict[str, list[float]] = {"save_pretrained": [], "gguf_f16": [], "gguf_q8_0": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model.save_pretrained(work / "merged")  # the converter's input, written once
        for source in model_dir.iterdir():
            if source.name.startswith("tokenizer") or source.name == "special_tokens_map.json":
                (work / "merged" / source.name).write_bytes(source.read_bytes())
        for pair in range(args.pairs):
            rows["save_pretrained"].append(_timed(lambda p=pair: model.save_pretrained(work / f"saved-{p}")))
            rows["gguf_f16"].append(
                _timed(lambda p=pair: convert_to_gguf(work / "merged", work / f"f16-{p}.gguf", quant="f16"))
            )
            rows["gguf_q8_0"].append(
                _timed(lambda p=pair: convert_to_gguf(work / "merged", work / f"q8-{p}.gguf", quant="q8_0"))
            )
            for leftover in work.glob(f"*-{pair}*"):
                if leftover.is_dir():
                    for f in leftover.iterdir():
                        f.unlink()
                    leftover.rmdir()
                else:
                    leftover.unlink()
    base = rows["save_pretrained"]
    ratios = {
        name: round(statistics.median(b / a for a, b in zip(base, times, strict=True)), 3)
        for name, times in rows.items()
        if name != "save_pretrained"
    }
    result = {
        "benchmark": "export_bench",
        "machine": {"platform": platform.platform(), "cpu_count": __import__("os").cpu_count()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "gguf": version("gguf")},
        "model": "SmolLM2-135M-Instruct (bundled), fp32 merged folder",
        "pairs": args.pairs,
        "seconds": {name: [round(t, 3) for t in times] for name, times in rows.items()},
        "median_seconds": {name: round(statistics.median(times), 3) for name, times in rows.items()},
        "ratio_vs_save_pretrained": ratios,
        "target": {"gguf_f16": "<= 3x"},
        "met": ratios["gguf_f16"] <= 3.0,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"{'':18}{'median s':>10}{'x save_pretrained':>20}")
    for name in rows:
        ratio = "1.000" if name == "save_pretrained" else f"{ratios[name]:.3f}"
        print(f"{name:18}{result['median_seconds'][name]:>10.2f}{ratio:>20}")
    print(f"target F16 <= 3x: {'met' if result['met'] else 'MISSED'}  -> {RESULTS}")


if __name__ == "__main__":
    main()
