"""train_bench_smollm2: the real bundled SmolLM2-135M on the demo's data, forge vs TRL `SFTTrainer`, per precision.

    python benchmarks/train_bench_smollm2.py                 # 3 interleaved rounds, fp32 and bf16
    python benchmarks/train_bench_smollm2.py --pairs 1 --steps 6 --precisions fp32   # a smoke run

What `make demo` trains: SmolLM2-135M-Instruct (the bundled GGUF, converted), LoRA r4 / alpha 8 / dropout 0
on all linear layers, micro-batch 4, max_length 320, the shipped customer-support data prepared by
`forge prepare` (assistant-only labels). For each precision (fp32; bf16 = autocast with fp32 adapters,
where the CPU has bf16 instructions):

- forge: `forgellm.training.loop.train` (what `forge train`'s worker runs), packed as the plan sets it.
- trl: train_bench's `trl.SFTTrainer(packing=False)` worker on the very token ids and labels `forge prepare`
  wrote, the same LoRA `peft_config`, `bf16=True` for bf16 (TRL's CPU autocast), everything else TRL's default.

Figures are real (non-padding) tokens per second from the end of the warm-up steps to the end of the
last one, each run in a fresh process, rounds interleaved (forge, trl per precision), medians of the
per-round ratios (../shared/BENCHMARKS.md). Targets (issue 13): forge >= 1.5x TRL, >= 400 real tokens/s.
Results: benchmarks/results/train_bench_smollm2.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import train_bench as base  # noqa: E402  (the workers, timing and run folders are train_bench's)

DEMO_CSV = HERE.parent / "examples" / "customer_support.csv"
MAX_LENGTH = 320
MICRO_BATCH = 4
LORA = {"r": 4, "alpha": 8, "dropout": 0.0}
LEARNING_RATE = 4e-4


def configure_base() -> None:
    """train_bench's workers read these module constants: point them at the demo's settings."""
    base.MAX_LENGTH, base.MICRO_BATCH, base.LORA, base.LEARNING_RATE = MAX_LENGTH, MICRO_BATCH, LORA, LEARNING_RATE


def build_project(work: Path, steps: int, precision: str) -> tuple[Path, Path, Path]:
    """A project on the bundled model with the demo data prepared -> (project, prepared, model folder)."""
    from forgellm.config.io import save_config
    from forgellm.config.schema import ForgeConfig
    from forgellm.data.prepare.run import prepare_dataset
    from forgellm.models.loading import chat_setup
    from forgellm.project import load_project

    model_dir = chat_setup("smollm2-135m").model_dir
    project = work / f"project-{precision}"
    project.mkdir()
    config = ForgeConfig.model_validate({
        "model": {"ref": str(model_dir), "max_length": MAX_LENGTH},  # the converted folder, as a run's spec has it
        "training": {
            "method": "lora", "lora": LORA, "micro_batch_size": MICRO_BATCH, "gradient_accumulation": 1,
            "learning_rate": LEARNING_RATE, "lr_scheduler": "constant", "warmup_ratio": 0.0, "max_steps": steps,
            "precision": precision, "gradient_checkpointing": False, "eval_every_steps": None,
            "save_every_steps": None, "seed": 42, "max_grad_norm": 1.0, "packing": True,
        },
    })
    save_config(config, project / "forge.yaml")
    result = prepare_dataset(*load_project(project), DEMO_CSV)
    return project, result.output_dir, Path(model_dir)


def rounds(projects: dict, work: Path, pairs: int, steps: int) -> dict:
    results: dict[str, list[dict]] = {p: [] for p in projects}
    for number in range(pairs):
        for precision, (project, prepared, model_dir) in projects.items():
            run_dir = base.make_run_dir(project, prepared, f"forge-{number}", packing=True)
            forge = base.run_worker("forge", ["--run-dir", str(run_dir)], script=__file__)
            trl_args = ["--prepared", str(prepared), "--model-dir", str(model_dir), "--work", str(work),
                        "--steps", str(steps), "--precision", precision]  # fmt: skip
            trl = base.run_worker("trl", trl_args, script=__file__)
            ratio = forge["tokens_per_s"] / trl["tokens_per_s"]
            results[precision].append({"forge": forge, "trl": trl, "ratio": ratio})
            print(f"  round {number + 1} {precision}: forge {forge['tokens_per_s']:,.0f} real tok/s, "
                  f"trl {trl['tokens_per_s']:,.0f} ({forge['tokens_per_s'] / trl['tokens_per_s']:.2f}x)", flush=True)
    return {
        precision: {
            "rounds": runs,
            "median_forge_vs_trl": statistics.median(r["ratio"] for r in runs),
            "median_forge_tokens_per_s": statistics.median(r["forge"]["tokens_per_s"] for r in runs),
            "median_trl_tokens_per_s": statistics.median(r["trl"]["tokens_per_s"] for r in runs),
        }
        for precision, runs in results.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run (the first ones untimed)")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "train_bench_smollm2.json")
    parser.add_argument("--worker", choices=["forge", "trl"])
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--prepared", type=Path)
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    configure_base()
    if args.worker:
        os.dup2(2, 1)  # library chatter to stderr; the result line goes to the saved stdout
        result = base.worker_forge(args) if args.worker == "forge" else base.worker_trl(args)
        os.write(_STDOUT, (json.dumps(result) + "\n").encode())
        return
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    with tempfile.TemporaryDirectory(prefix="train-bench-smollm2-") as tmp:
        work = Path(tmp)
        projects = {p: build_project(work, args.steps, p) for p in precisions}
        print(f"demo data prepared; {args.pairs} interleaved rounds of {args.steps} steps per precision", flush=True)
        speed = rounds(projects, work, args.pairs, args.steps)
    report = {
        "settings": {"model": "SmolLM2-135M-Instruct (bundled)", "data": "examples/customer_support.csv",
                     "max_length": MAX_LENGTH, "micro_batch_size": MICRO_BATCH, "lora": LORA, "steps": args.steps,
                     "warmup_steps_untimed": base.WARMUP_STEPS, "pairs": args.pairs, "forge_packing": True,
                     "trl_packing": False},
        "speed": speed,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "note": "shared machine: absolute figures are noisy, ratios are interleaved"},
        "versions": base.versions(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    for precision, figures in speed.items():
        print(f"{precision}: forge {figures['median_forge_tokens_per_s']:,.0f} real tok/s (target >= 400), "
              f"TRL {figures['median_trl_tokens_per_s']:,.0f}; forge / TRL {figures['median_forge_vs_trl']:.2f}x "
              "(target >= 1.5)")


_STDOUT = os.dup(1)

if __name__ == "__main__":
    main()
