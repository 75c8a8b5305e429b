"""Memory estimator vs measured peak: SmolLM2-135M, full fine-tuning, fp32, CPU, two sequence lengths.

Each measurement runs in a fresh child process (this script with ``--child``), so its peak RSS
(VmHWM of /proc/self/status) is that of one training job and nothing else: the
interpreter, torch, the model, a few real optimizer steps (forward, backward, AdamW step).

    python benchmarks/memory_estimate.py                  # both lengths, writes results/memory_estimate.json
    python benchmarks/memory_estimate.py --model-dir DIR  # another HF folder of the same model

The child is also what ``tests/planning/test_memory_measured.py`` runs, so the test and the
benchmark measure the same thing. No network: the model is the bundled offline SmolLM2.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

SEQ_LENS = (256, 1024)
MICRO_BATCH = 2
STEPS = 3
RESULTS = Path(__file__).resolve().parent / "results" / "memory_estimate.json"


def _rss_bytes() -> int:
    """This process's peak RSS. On Linux from /proc's VmHWM: ru_maxrss survives fork + exec, so a child
    started by a big parent (a test run holding several models) would report the parent's size."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def child(model_dir: str, seq_len: int, micro_batch: int, steps: int, checkpointing: bool) -> dict:
    """Train `steps` real steps and report the process's peak RSS (runs inside the child)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    baseline = _rss_bytes()  # interpreter + torch + transformers, before the model
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False  # training keeps no KV cache
    if checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    vocab = model.config.vocab_size
    started = time.perf_counter()
    for _ in range(steps):
        ids = torch.randint(0, vocab, (micro_batch, seq_len))
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {
        "seq_len": seq_len,
        "micro_batch": micro_batch,
        "steps": steps,
        "gradient_checkpointing": checkpointing,
        "peak_rss_bytes": _rss_bytes(),
        "baseline_rss_bytes": baseline,
        "seconds_per_step": round((time.perf_counter() - started) / steps, 3),
        "final_loss": round(float(loss), 4),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def measure(model_dir: Path, seq_len: int, micro_batch: int, steps: int = STEPS, checkpointing: bool = True) -> dict:
    """Run the child in a fresh interpreter and return its report."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--model-dir",
        str(model_dir),
        "--seq-len",
        str(seq_len),
        "--micro-batch",
        str(micro_batch),
        "--steps",
        str(steps),
    ]
    if not checkpointing:
        command.append("--no-checkpointing")
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"measurement failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(model_dir: Path, seq_len: int, micro_batch: int, checkpointing: bool = True, steps: int = STEPS) -> dict:
    """Estimate and measurement of one setting, with estimate / measured."""
    from forgellm.hardware.memory import estimate_training_memory
    from forgellm.models.catalog import get_spec

    estimate = estimate_training_memory(
        get_spec("smollm2-135m"),
        method="full",
        seq_len=seq_len,
        micro_batch=micro_batch,
        precision="fp32",
        gradient_checkpointing=checkpointing,
        device="cpu",
    )
    measured = measure(model_dir, seq_len, micro_batch, steps, checkpointing=checkpointing)
    return {
        **measured,
        "estimate_bytes": estimate.total_bytes,
        "estimate": estimate.to_dict(),
        "ratio": round(estimate.total_bytes / measured["peak_rss_bytes"], 3),
    }


def _default_model_dir() -> Path:
    from forgellm.models.resolve import materialize, resolve_model

    return materialize(resolve_model("smollm2-135m"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, default=None, help="HF folder of SmolLM2-135M (default: bundled).")
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--micro-batch", type=int, default=MICRO_BATCH)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--no-checkpointing", action="store_true")
    args = parser.parse_args()
    if args.child:
        report = child(str(args.model_dir), args.seq_len, args.micro_batch, args.steps, not args.no_checkpointing)
        print(json.dumps(report))
        return
    model_dir = args.model_dir or _default_model_dir()
    lengths = (args.seq_len,) if args.seq_len else SEQ_LENS
    rows = [compare(model_dir, s, args.micro_batch, checkpointing=c) for s in lengths for c in (True, False)]
    print(f"{'seq':>5} {'batch':>5} {'ckpt':>5} {'estimate MB':>12} {'measured MB':>12} {'ratio':>6}")
    for row in rows:
        print(
            f"{row['seq_len']:>5} {row['micro_batch']:>5} {str(row['gradient_checkpointing']):>5} "
            f"{row['estimate_bytes'] / 2**20:>12,.0f} {row['peak_rss_bytes'] / 2**20:>12,.0f} {row['ratio']:>6.2f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "memory_estimate",
                "what": "estimate_training_memory(device='cpu') vs peak RSS of a fresh process training "
                "SmolLM2-135M (full fine-tuning, fp32, AdamW) for a few steps",
                "target": "ratio within 0.75..1.25",
                "machine": {"platform": platform.platform(), "python": platform.python_version()},
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
