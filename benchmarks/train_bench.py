"""train_bench: Forge's training loop (packed and unpacked) against plain TRL `SFTTrainer`, plus packing checks.

    python benchmarks/train_bench.py                  # 3 interleaved rounds of 12 steps
    python benchmarks/train_bench.py --pairs 5 --steps 24
    python benchmarks/train_bench.py --quick          # 1 round of 6 steps: a smoke run, not a figure

Same model, same data, same LoRA, same max_length, micro-batch and number of optimizer steps, fp32 on CPU:

- forge-packed / forge-unpacked: `forgellm.training.loop.train` (what `forge train`'s worker runs) on a run
  folder written as the supervisor writes it, `training.packing` on / off.
- trl: `trl.SFTTrainer` with `SFTConfig(packing=False)` and the same LoRA `peft_config`. It gets the very
  token ids and labels `forge prepare` wrote (a pre-tokenized dataset with a `labels` column, which TRL
  uses as is), so both train on assistant tokens only with identical data. Everything else is TRL's default
  (e.g. its per-step entropy/token-accuracy metrics through its fused LM head): that is the baseline.

Model: a randomly initialised (seed 0) Llama with the SmolLM2-135M tokenizer (49k vocabulary), 4 layers of
width 256: big enough that matrix products dominate, small enough for minutes on 2 CPU cores.
Data: the first rows of the Bitext customer-support set with each answer cut to its first sentence (short
chats of ~40-100 tokens), prepared with `forgellm.data.prepare.run.prepare_dataset`.

Speed is real (non-padding) tokens per second between the end of the warm-up steps and the end of the last
step, each run in a fresh process; runs are interleaved (forge-packed, forge-unpacked, trl per round) and
the medians of the per-round ratios are reported (../shared/BENCHMARKS.md).

Packing correctness uses the real SmolLM2-135M weights (a random model barely looks at context, so it
would hide leaks): the per-example loss of examples packed into shared rows vs each example alone; a
control computes the same with a plain causal mask over the packed row to show the check sees leaks.
Results: benchmarks/results/train_bench.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED_CSV = HERE.parent.parent / "shared" / "data" / "bitext_customer_support.csv"
MAX_LENGTH = 256
MICRO_BATCH = 4
WARMUP_STEPS = 2  # first steps pay for lazy init and allocator growth: not timed
LORA = {"r": 8, "alpha": 16, "dropout": 0.0}
LEARNING_RATE = 1e-4
MODEL_SHAPE = {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
               "num_attention_heads": 4, "num_key_value_heads": 2}


# ---------------------------------------------------------------------------------------- inputs


def write_short_csv(path: Path, rows: int) -> int:
    """The first `rows` Bitext question/answer pairs, each answer cut to its first sentence."""
    if not SHARED_CSV.is_file():
        raise SystemExit(f"train_bench needs the Bitext support set at {SHARED_CSV}")
    count = 0
    with open(SHARED_CSV, newline="", encoding="utf-8") as handle, open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["instruction", "response"])
        for row in csv.DictReader(handle):
            match = re.match(r"(.+?[.!?])(\s|$)", row["response"].strip(), flags=re.S)
            answer = (match.group(1) if match else row["response"].strip())[:240].replace("\n", " ")
            writer.writerow([row["instruction"], answer])
            count += 1
            if count >= rows:
                break
    return count


def build_model_dir(folder: Path) -> Path:
    """A random-init (seed 0) Llama of MODEL_SHAPE with the bundled SmolLM2 tokenizer and chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from forgellm.models.loading import chat_setup

    tokenizer = chat_setup("smollm2-135m").tokenizer
    config = LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **MODEL_SHAPE,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_project(work: Path, model_dir: Path, data: Path, steps: int) -> tuple[Path, Path]:
    """A project on the bench model with prepared data -> (project, prepared folder)."""
    from forgellm.config.io import save_config
    from forgellm.config.schema import ForgeConfig
    from forgellm.data.prepare.run import prepare_dataset
    from forgellm.project import load_project

    project = work / "project"
    project.mkdir()
    config = ForgeConfig.model_validate({
        "model": {"ref": str(model_dir), "max_length": MAX_LENGTH},
        "preprocessing": {"split": {"train": 0.98, "val": 0.01, "test": 0.01}},
        "training": {
            "method": "lora", "lora": LORA, "micro_batch_size": MICRO_BATCH, "gradient_accumulation": 1,
            "learning_rate": LEARNING_RATE, "lr_scheduler": "constant", "warmup_ratio": 0.0, "max_steps": steps,
            "precision": "fp32", "gradient_checkpointing": False, "eval_every_steps": None, "save_every_steps": None,
            "seed": 42, "max_grad_norm": 1.0,
        },
    })
    save_config(config, project / "forge.yaml")
    result = prepare_dataset(*load_project(project), data)
    return project, result.output_dir


def make_run_dir(project: Path, prepared: Path, name: str, packing: bool) -> Path:
    """A run folder as the supervisor writes it: run.json + the config snapshot."""
    from forgellm.config.io import load_config, save_config
    from forgellm.project.layout import RUN_CONFIG
    from forgellm.project.run_record import RunSpec
    from forgellm.training.data import read_manifest_tokenizer

    config = load_config(project / "forge.yaml", environ={}).config
    config.training.packing = packing
    run_dir = project / "runs" / name
    run_dir.mkdir(parents=True)
    spec = RunSpec(name, str(project), str(prepared), config.model.ref, read_manifest_tokenizer(prepared))
    spec.save(run_dir)
    save_config(config, run_dir / RUN_CONFIG)
    return run_dir


def timed_rate(stamps: list[float], real: list[int], processed: list[int]) -> dict:
    """Real tokens/s from the end of the warm-up steps to the end of the last step."""
    seconds = stamps[-1] - stamps[WARMUP_STEPS - 1]
    timed_real, timed_processed = sum(real[WARMUP_STEPS:]), sum(processed[WARMUP_STEPS:])
    return {
        "tokens_per_s": timed_real / seconds, "seconds": seconds, "real_tokens": timed_real,
        "processed_tokens": timed_processed, "padding_efficiency": timed_real / timed_processed,
        "steps": len(stamps),
    }


# ---------------------------------------------------------------------------------------- workers


def worker_forge(args: argparse.Namespace) -> dict:
    """Forge's worker loop in this process; every step event is stamped as it is emitted."""
    from forgellm.training.loop import train
    from forgellm.training.protocol import ExitCode, parse_event

    stamps, real, processed, losses = [], [], [], []

    def emit(line: str) -> None:
        event = parse_event(line)
        if event and event["event"] == "step":
            stamps.append(time.perf_counter())
            real.append(event["real_tokens"])
            processed.append(event["tokens"])
            losses.append(event["loss"])
        elif event and event["event"] == "error":
            print(json.dumps(event), file=sys.stderr)

    code = train(args.run_dir, None, emit)
    if code != ExitCode.OK:
        raise SystemExit(f"forge training failed with exit code {int(code)}")
    return {**timed_rate(stamps, real, processed), "first_loss": losses[0], "last_loss": losses[-1]}


def worker_trl(args: argparse.Namespace) -> dict:
    """Plain TRL SFTTrainer (no packing) on the same tokenized examples and labels, same LoRA and schedule."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from forgellm.training.data import load_split

    split = load_split(args.prepared, "train")
    examples = [split.example(i) for i in range(len(split))]
    dataset = Dataset.from_dict({"input_ids": [ids.tolist() for ids, _ in examples],
                                 "labels": [labels.tolist() for _, labels in examples]})
    tokenizer = AutoTokenizer.from_pretrained(str(args.model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(args.model_dir), dtype=torch.float32)
    stamps, real, processed = [], [], []

    class Stamp(TrainerCallback):
        def on_step_end(self, *_args, **_kwargs):
            stamps.append(time.perf_counter())

    class CountingTrainer(SFTTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            real.append(int(inputs["attention_mask"].sum()))
            processed.append(int(inputs["input_ids"].numel()))
            return super().training_step(model, inputs, num_items_in_batch)

    config = SFTConfig(
        output_dir=str(args.work / "trl-out"), packing=False, max_length=MAX_LENGTH,
        per_device_train_batch_size=MICRO_BATCH, gradient_accumulation_steps=1, max_steps=args.steps,
        learning_rate=LEARNING_RATE, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, optim="adamw_torch", gradient_checkpointing=False,
        bf16=getattr(args, "precision", "fp32") == "bf16", fp16=False,
        use_cpu=True, seed=42, save_strategy="no", eval_strategy="no", report_to="none",
        logging_steps=10_000, disable_tqdm=True,
    )
    peft_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                             target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = CountingTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                              peft_config=peft_config, callbacks=[Stamp()])
    trainer.train()
    return timed_rate(stamps, real, processed)


def _per_example_losses(model, examples, rows, pad_id, *, leak: bool = False) -> tuple[list[float], list[float]]:
    """(each example alone, the same examples packed as `rows`): mean loss over each example's targets.

    With ``leak`` the packed rows get a plain causal mask and running positions: the control that
    shows the comparison would notice attention across examples.
    """
    import torch
    import torch.nn.functional as F

    from forgellm.training.packing import IGNORE_INDEX, collate_packed, collate_padded

    def token_losses(batch):
        with torch.no_grad():
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                           position_ids=batch.position_ids).logits.float()
        targets = batch.labels[:, 1:]
        losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
        return losses, targets != IGNORE_INDEX

    alone = []
    for ids, labels in examples:
        losses, kept = token_losses(collate_padded([ids], [labels], pad_id))
        alone.append(float(losses[kept].mean()))
    packed = [0.0] * len(examples)
    for row in rows:
        batch = collate_packed([[examples[i] for i in row]], pad_id)
        if leak:
            width = batch.input_ids.shape[1]
            batch.attention_mask = torch.ones((1, width), dtype=torch.long)
            batch.position_ids = torch.arange(width)[None]
        losses, kept = token_losses(batch)
        cursor = 0
        for index in row:  # logits at t predict token t+1: example tokens [start+1, end) are targets [start, end-1)
            end = cursor + len(examples[index][0])
            packed[index] = float(losses[0, cursor : end - 1][kept[0, cursor : end - 1]].mean())
            cursor = end
    return alone, packed


def worker_correctness(args: argparse.Namespace) -> dict:
    """Per-example loss packed vs alone on the real SmolLM2-135M, fp32; plus the leaking control."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from forgellm.models.loading import chat_setup
    from forgellm.training.data import load_split
    from forgellm.training.packing import arrange_rows

    setup = chat_setup("smollm2-135m")
    model = AutoModelForCausalLM.from_pretrained(str(setup.model_dir), dtype=torch.float32).eval()
    split = load_split(args.prepared, "train")
    count = min(args.examples, len(split))
    examples = [split.example(i) for i in range(count)]
    lengths = np.array([len(ids) for ids, _ in examples])
    rows = [list(map(int, row)) for row in arrange_rows(np.arange(count), lengths, MAX_LENGTH, seed=0)]
    pad_id = setup.tokenizer.pad_token_id or setup.tokenizer.eos_token_id
    alone, packed = _per_example_losses(model, examples, rows, pad_id)
    _, leaked = _per_example_losses(model, examples, rows, pad_id, leak=True)

    def max_rel(values):
        return max(abs(a - b) / abs(a) for a, b in zip(alone, values, strict=True))

    return {"examples": count, "rows": len(rows), "examples_per_row": count / len(rows),
            "max_rel_diff": max_rel(packed), "control_max_rel_diff_causal_mask": max_rel(leaked),
            "attention": model.config._attn_implementation}


WORKERS = {"forge": worker_forge, "trl": worker_trl, "correctness": worker_correctness}


def run_worker(kind: str, extra: list[str], script: str = __file__) -> dict:
    """Run ``script --worker kind`` in a fresh process (train_bench_smollm2.py passes itself)."""
    out = subprocess.run([sys.executable, script, "--worker", kind, *extra], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------- main


def speed_rounds(project: Path, prepared: Path, model_dir: Path, work: Path, pairs: int, steps: int) -> dict:
    rounds = []
    for number in range(pairs):
        result = {}
        for variant, packing in (("forge_packed", True), ("forge_unpacked", False)):
            run_dir = make_run_dir(project, prepared, f"{variant}-{number}", packing)
            result[variant] = run_worker("forge", ["--run-dir", str(run_dir)])
        result["trl"] = run_worker("trl", ["--prepared", str(prepared), "--model-dir", str(model_dir),
                                           "--work", str(work), "--steps", str(steps)])
        rate = {k: v["tokens_per_s"] for k, v in result.items()}
        rounds.append({**result, "packed_vs_trl": rate["forge_packed"] / rate["trl"],
                       "unpacked_vs_trl": rate["forge_unpacked"] / rate["trl"]})
        print(f"  round {number + 1}: forge packed {rate['forge_packed']:,.0f} real tok/s, unpacked "
              f"{rate['forge_unpacked']:,.0f}, trl {rate['trl']:,.0f}", flush=True)
    return {
        "rounds": rounds,
        "median_packed_vs_trl": statistics.median(r["packed_vs_trl"] for r in rounds),
        "median_unpacked_vs_trl": statistics.median(r["unpacked_vs_trl"] for r in rounds),
        "median_padding_efficiency": {k: statistics.median(r[k]["padding_efficiency"] for r in rounds)
                                      for k in ("forge_packed", "forge_unpacked", "trl")},
    }


def versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "transformers", "peft", "trl", "datasets")}


def report_lines(report: dict) -> list[str]:
    speed, check = report["speed"], report["packing_correctness"]
    eff = speed["median_padding_efficiency"]
    return [
        f"forge packed / TRL (real tokens/s):   {speed['median_packed_vs_trl']:.2f}x (target >= 1.3)",
        f"forge unpacked / TRL (real tokens/s): {speed['median_unpacked_vs_trl']:.2f}x (target >= 0.95)",
        f"padding efficiency: forge packed {eff['forge_packed']:.3f} (target >= 0.95), "
        f"forge unpacked {eff['forge_unpacked']:.3f}, TRL {eff['trl']:.3f}",
        f"packing correctness: max rel. diff {check['max_rel_diff']:.2e} over {check['examples']} examples "
        f"(target <= 1e-4); control with a plain causal mask: {check['control_max_rel_diff_causal_mask']:.2e}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3, help="interleaved rounds (forge packed, unpacked, TRL)")
    parser.add_argument("--steps", type=int, default=12, help=f"optimizer steps per run (first {WARMUP_STEPS} untimed)")
    parser.add_argument("--rows", type=int, default=3000, help="Bitext rows to prepare")
    parser.add_argument("--examples", type=int, default=48, help="examples in the packing correctness check")
    parser.add_argument("--quick", action="store_true", help="1 round of 6 steps, 16 correctness examples")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "train_bench.json")
    parser.add_argument("--worker", choices=list(WORKERS))
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--prepared", type=Path)
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    if args.worker:
        os.dup2(2, 1)  # library chatter to stderr; the result line goes to the saved stdout
        result = WORKERS[args.worker](args)
        os.write(_STDOUT, (json.dumps(result) + "\n").encode())
        return
    if args.quick:
        args.pairs, args.steps, args.examples = 1, 6, 16
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        work = Path(tmp)
        rows = write_short_csv(work / "support.csv", args.rows)
        model_dir = build_model_dir(work / "bench-model")
        project, prepared = build_project(work, model_dir, work / "support.csv", args.steps)
        print(f"{rows} rows prepared; {args.pairs} interleaved rounds of {args.steps} steps", flush=True)
        speed = speed_rounds(project, prepared, model_dir, work, args.pairs, args.steps)
        print("packing correctness on SmolLM2-135M", flush=True)
        check = run_worker("correctness", ["--prepared", str(prepared), "--examples", str(args.examples)])
    report = {
        "settings": {"model": {"init": "random, seed 0", "tokenizer": "SmolLM2-135M", **MODEL_SHAPE},
                     "max_length": MAX_LENGTH, "micro_batch_size": MICRO_BATCH, "steps": args.steps,
                     "warmup_steps_untimed": WARMUP_STEPS, "lora": LORA, "precision": "fp32", "rows": rows,
                     "loss": "assistant tokens only (labels from forge prepare, given to TRL as a labels column)",
                     "pairs": args.pairs, "quick": args.quick},
        "speed": speed,
        "packing_correctness": check,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch_threads": __import__("torch").get_num_threads(),
                    "note": "shared machine: absolute figures are noisy, ratios are interleaved"},
        "versions": versions(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print("\n".join(report_lines(report)))


# A worker's result line goes to the real stdout; fd 1 is pointed at stderr before the work starts,
# so progress bars and warnings of the libraries (Python or C) cannot corrupt it.
_STDOUT = os.dup(1)

if __name__ == "__main__":
    main()
