"""gpu_check: bf16 LoRA and QLoRA through Forge on a GPU, a few steps each: real tokens/s and peak GPU memory.

    python benchmarks/gpu_check.py --model /models/Qwen2.5-0.5B-Instruct            # on a GPU machine
    python benchmarks/gpu_check.py --model DIR --steps 20 --methods lora            # LoRA only
    python benchmarks/gpu_check.py --cpu-smoke                                      # checks this script only

Runs offline: the model is a local Hugging Face folder (0.5-1.5B parameters; carried in), the data a small
generated question/answer CSV prepared by `forge prepare`'s library call. Each method trains in a fresh
process through `forgellm.training.loop.train` (what `forge train`'s worker runs): bf16, packed, micro-batch
8 x 512 tokens, LoRA r16 on all linear layers; QLoRA the same on the 4-bit (bitsandbytes NF4) base. Figures:
real (non-padding) tokens/s after the warm-up steps, ``torch.cuda.max_memory_allocated`` (peak), and the
QLoRA / LoRA peak ratio (../shared/BENCHMARKS.md: <= 0.45x). Without a CUDA GPU it stops with exit code 2
(``--cpu-smoke`` trains 4 fp32 LoRA steps of the bundled SmolLM2-135M on the CPU to check the plumbing; its
figures mean nothing). Then the scale-out smoke: `forge train --distributed ddp --gpus 1` and `--distributed
fsdp --gpus 1` with CPU offload, through the real command (accelerate/torchrun launcher, process group,
wrapping, rank-0 checkpoint), and `forge export` (merged weights + f16 GGUF) of the DDP run: each reports its
status, seconds and tokens/s. Results: benchmarks/results/gpu_check.json. benchmarks/gpu_check.sh wraps this
with the wheel install and `forge docker probe`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import train_bench as base  # noqa: E402  (run folders, workers and the timed rate are train_bench's)

MAX_LENGTH = 512
MICRO_BATCH = 8
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
NO_GPU_EXIT = 2
TOPICS = ["invoice", "password", "delivery", "refund", "account", "subscription", "warranty", "order"]


def write_csv(path: Path, rows: int) -> None:
    """Question/answer rows of varied length (seeded): enough to fill every step of the run."""
    import csv

    rng = random.Random(0)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["instruction", "response"])
        for number in range(rows):
            topic = rng.choice(TOPICS)
            question = f"Question {number}: how do I sort out my {topic}? " + "It still does not work. " * rng.randint(
                0, 6
            )
            steps = " ".join(
                f"Step {i + 1}: check the {topic} page and press button {rng.randint(1, 9)}."
                for i in range(rng.randint(2, 14))
            )
            writer.writerow([question.strip(), f"I can help with your {topic}. {steps}"])


def build_project(
    work: Path, model_dir: Path, data: Path, method: str, steps: int, precision: str, name: str | None = None,
    **training,
) -> Path:
    """A project for one method with the data prepared -> its run folder."""
    from forgellm.config.io import save_config
    from forgellm.config.schema import ForgeConfig
    from forgellm.data.prepare.run import prepare_dataset
    from forgellm.project import load_project

    project = work / f"project-{name or method}"
    project.mkdir()
    config = ForgeConfig.model_validate(
        {
            "model": {"ref": str(model_dir), "max_length": MAX_LENGTH},
            "preprocessing": {"split": {"train": 0.98, "val": 0.01, "test": 0.01}},
            "training": {
                "method": method,
                "lora": LORA,
                "micro_batch_size": MICRO_BATCH,
                "gradient_accumulation": 1,
                "learning_rate": 2e-4,
                "lr_scheduler": "constant",
                "warmup_ratio": 0.0,
                "max_steps": steps,
                "precision": precision,
                "gradient_checkpointing": False,
                "eval_every_steps": None,
                "save_every_steps": None,
                "seed": 42,
                "max_grad_norm": 1.0,
                "packing": True,
                **training,
            },
        }
    )
    save_config(config, project / "forge.yaml")
    prepared = prepare_dataset(*load_project(project), data).output_dir
    return base.make_run_dir(project, prepared, f"{method}-check", packing=True)


def worker_forge(args: argparse.Namespace) -> dict:
    """train_bench's timed Forge worker, plus the peak GPU memory of this process."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = base.worker_forge(args)
    if torch.cuda.is_available():
        result["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated())
        result["gpu"] = torch.cuda.get_device_name(0)
    return result


def gpu_problem() -> str | None:
    """Why this machine cannot run the check (no torch, no CUDA GPU), or None."""
    try:
        import torch
    except ImportError as exc:
        return f"torch is not importable ({exc})"
    if not torch.cuda.is_available():
        return f"no CUDA GPU is visible to torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'})"
    return None


def smoke_model() -> Path:
    from forgellm.models.loading import chat_setup

    return Path(chat_setup("smollm2-135m").model_dir)


def run(args: argparse.Namespace) -> dict:
    precision = "fp32" if args.cpu_smoke else "bf16"
    model_dir = smoke_model() if args.cpu_smoke else args.model
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        write_csv(work / "qa.csv", args.rows)
        for method in args.methods:
            if method == "qlora" and args.cpu_smoke:
                results[method] = {"skipped": "QLoRA needs an NVIDIA GPU (bitsandbytes)"}
                continue
            run_dir = build_project(work, model_dir, work / "qa.csv", method, args.steps, precision)
            print(f"{method}: {args.steps} steps of {MICRO_BATCH} x {MAX_LENGTH} tokens, {precision}", flush=True)
            results[method] = base.run_worker("forge", ["--run-dir", str(run_dir)], script=__file__)
        results.update(scale_out_smoke(work, model_dir, precision, args.scale_steps, cpu=args.cpu_smoke))
    return results


def _forge(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", "from forgellm.cli.main import run; run()", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})},
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr, time.perf_counter() - started


def scale_out_smoke(work: Path, model_dir: Path, precision: str, steps: int, *, cpu: bool) -> dict:
    """DDP and FSDP (+ CPU offload) on one process through `forge train`, then `forge export` of the DDP run."""
    results: dict[str, dict] = {}
    env = {"FORGE_DISTRIBUTED_CPU": "1"} if cpu else {}
    for strategy, offload in (("ddp", False), ("fsdp", True)):
        key = f"{strategy}{'+offload' if offload else ''} (1 process)"
        run_dir = build_project(work, model_dir, work / "qa.csv", "lora", steps, precision, name=strategy,
                                offload=offload)  # fmt: skip
        project = run_dir.parent.parent
        shutil.rmtree(run_dir)  # `forge train` makes its own run
        print(f"{key}: forge train --distributed {strategy} --gpus 1, {steps} steps", flush=True)
        code, out, err, seconds = _forge(["train", "-C", str(project), "--distributed", strategy, "--gpus", "1",
                                          "--json"], env)  # fmt: skip
        result: dict = {"exit_code": code, "seconds": round(seconds, 1)}
        if code == 0:
            summary = json.loads(out)
            result.update({k: summary.get(k) for k in ("status", "steps", "tokens_per_s", "peak_memory_bytes")})
        else:
            result["error"] = err[-2000:]
        results[key] = result
    project = work / "project-ddp"
    if results["ddp (1 process)"]["exit_code"] == 0:
        print("export: forge export (merged + f16 GGUF) of the DDP run", flush=True)
        code, out, err, seconds = _forge(["export", "-C", str(project), "--quant", "f16", "--json"])
        results["export"] = {"exit_code": code, "seconds": round(seconds, 1), "error": err[-2000:] if code else None,
                             "files": sorted(p.name for p in (project / "exports").rglob("*.gguf"))}  # fmt: skip
    return results


def report_of(args: argparse.Namespace, results: dict) -> dict:
    peaks = {m: r.get("peak_gpu_bytes") for m, r in results.items()}
    ratio = peaks["qlora"] / peaks["lora"] if peaks.get("qlora") and peaks.get("lora") else None
    return {
        "settings": {
            "model": str(args.model) if not args.cpu_smoke else "smollm2-135m (cpu smoke)",
            "max_length": MAX_LENGTH,
            "micro_batch_size": MICRO_BATCH,
            "steps": args.steps,
            "warmup_steps_untimed": base.WARMUP_STEPS,
            "lora": LORA,
            "packing": True,
            "cpu_smoke": args.cpu_smoke,
        },
        "results": results,
        "qlora_vs_lora_peak_memory": ratio,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "versions": base.versions() | _bnb_version(),
    }


def _bnb_version() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return {"bitsandbytes": version("bitsandbytes")}
    except PackageNotFoundError:
        return {"bitsandbytes": None}


def table(report: dict) -> list[str]:
    lines = [f"{'method':<7} {'real tok/s':>11} {'peak GPU GiB':>13} {'loss first->last':>18}  gpu"]
    for method, result in report["results"].items():
        if "skipped" in result:
            lines.append(f"{method:<7} skipped: {result['skipped']}")
            continue
        if "exit_code" in result:  # the scale-out and export smoke: a command's outcome
            outcome = "ok" if result["exit_code"] == 0 else f"FAILED (exit {result['exit_code']})"
            speed = f", {result['tokens_per_s']:,.0f} tok/s" if result.get("tokens_per_s") else ""
            lines.append(f"{method}: {outcome} in {result['seconds']} s{speed} {result.get('files') or ''}".rstrip())
            continue
        peak = result.get("peak_gpu_bytes")
        lines.append(
            f"{method:<7} {result['tokens_per_s']:>11,.0f} {(peak or 0) / 2**30:>13.2f} "
            f"{result['first_loss']:>8.3f}->{result['last_loss']:<8.3f}  {result.get('gpu', 'cpu')}"
        )
    if report["qlora_vs_lora_peak_memory"]:
        lines.append(f"QLoRA / LoRA peak memory: {report['qlora_vs_lora_peak_memory']:.2f}x (target <= 0.45)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        type=Path,
        default=os.environ.get("FORGE_GPU_CHECK_MODEL"),
        help="local Hugging Face model folder, 0.5-1.5B (env FORGE_GPU_CHECK_MODEL)",
    )
    parser.add_argument(
        "--steps", type=int, default=30, help=f"optimizer steps per method (first {base.WARMUP_STEPS} untimed)"
    )
    parser.add_argument("--methods", type=lambda s: s.split(","), default=["lora", "qlora"], help="lora,qlora")
    parser.add_argument("--rows", type=int, default=1200, help="generated question/answer rows")
    parser.add_argument("--scale-steps", type=int, default=6, help="steps of each scale-out smoke run")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gpu_check.json")
    parser.add_argument("--cpu-smoke", action="store_true", help="check the script on a CPU (figures mean nothing)")
    parser.add_argument("--worker", choices=["forge"])
    parser.add_argument("--run-dir", type=Path)
    args = parser.parse_args()
    if args.worker:
        os.dup2(2, 1)  # library chatter to stderr; the result line goes to the saved stdout
        os.write(base._STDOUT, (json.dumps(worker_forge(args)) + "\n").encode())
        return
    if not args.cpu_smoke:
        problem = gpu_problem()
        if problem:
            print(
                f"gpu_check: {problem}. This check needs an NVIDIA GPU; run it on a GPU machine "
                "(or --cpu-smoke to check the script itself).",
                file=sys.stderr,
            )
            raise SystemExit(NO_GPU_EXIT)
        if args.model is None or not (args.model / "config.json").is_file():
            parser.error(f"--model must be a local Hugging Face model folder with config.json (got {args.model})")
    unknown = [m for m in args.methods if m not in ("lora", "qlora")]
    if unknown or args.steps <= base.WARMUP_STEPS:
        parser.error(f"--methods takes lora,qlora (got {unknown}); --steps must exceed {base.WARMUP_STEPS}")
    report = report_of(args, run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(table(report)))
    print(
        json.dumps(
            {
                m: {k: r.get(k) for k in ("tokens_per_s", "peak_gpu_bytes", "skipped")}
                for m, r in report["results"].items()
            }
        )
    )


if __name__ == "__main__":
    main()
