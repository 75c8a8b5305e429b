"""prepare_bench: `forge prepare` against a naive baseline and the tokenizer-only ceiling, plus memory.

    python benchmarks/prepare_bench.py                     # throughput on ~40 MB, memory at 1x/2x
    python benchmarks/prepare_bench.py --throughput-mb 200 --memory-mb 2048 --pairs 5

It builds its own input: the Bitext support CSV (from ../shared/data, or examples/support_chats.jsonl
as a fallback), shuffled, with varied wording so rows are not duplicates. Each measurement runs in a
fresh process (peak RSS = that process's ru_maxrss); A/B/C runs are interleaved and the medians of
the per-round ratios are reported (see ../shared/BENCHMARKS.md). Results: benchmarks/results/prepare_bench.json.

- forge:    `prepare_dataset` on a project targeting the bundled smollm2-135m (read, recipe, render,
            tokenize with labels, split, write, validate).
- naive:    pandas.read_csv + one `tokenizer.apply_chat_template(messages, tokenize=True)` per row.
- ceiling:  one batched `tokenizer(texts)` call over the already rendered texts; no I/O, no labels.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED_CSV = HERE.parent.parent / "shared" / "data" / "bitext_customer_support.csv"
FALLBACK = HERE.parent / "examples" / "support_chats.jsonl"
OPENERS = ["", "Hi, ", "Hello! ", "Good morning, ", "Hey there, ", "Excuse me, ", "Quick question: "]
CLOSERS = ["", " Thanks.", " Thank you!", " Please help.", " Cheers.", " It's urgent."]


def source_rows() -> list[tuple[str, str, str]]:
    if SHARED_CSV.is_file():
        with open(SHARED_CSV, encoding="utf-8", newline="") as handle:
            return [(r["instruction"], r["response"], r["category"]) for r in csv.DictReader(handle)]
    rows = [json.loads(line) for line in FALLBACK.read_text(encoding="utf-8").splitlines()]
    return [(r["messages"][0]["content"], r["messages"][1]["content"], r["category"]) for r in rows]


def make_csv(path: Path, target_bytes: int, seed: int = 0) -> int:
    """A CSV of about target_bytes; each row a varied copy of a real one (opener, closer, ticket number)."""
    rows, rng = source_rows(), random.Random(seed)
    written = count = 0
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["instruction", "response", "category"])
        while written < target_bytes:
            question, answer, category = rng.choice(rows)
            question = f"{rng.choice(OPENERS)}{question} (ticket {count}){rng.choice(CLOSERS)}"
            line = [question, answer.replace("{{", "{{ ").replace("}}", " }}") if count % 7 == 0 else answer, category]
            writer.writerow(line)
            written += sum(len(x) for x in line) + 8
            count += 1
    return count


# ---------------------------------------------------------------------------------------- workers


def worker_forge(data: Path, work: Path) -> dict:
    from forgellm.config.io import save_config
    from forgellm.config.schema import ForgeConfig
    from forgellm.data.prepare.run import prepare_dataset
    from forgellm.project import load_project

    project = Path(tempfile.mkdtemp(dir=work))
    config = ForgeConfig.model_validate({"model": {"max_length": 1024}})
    save_config(config, project / "forge.yaml")
    from forgellm.models.loading import chat_setup

    chat_setup("smollm2-135m")  # converted model and warm imports: not part of the timing
    import pyarrow as pa

    pa.table({"warm": [1]})  # pyarrow imports pandas (when installed) on first use: an import, not work
    start = time.perf_counter()
    result = prepare_dataset(*load_project(project), data)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": result.stats["rows_read"], "stages": result.stats["seconds_by_stage"]}


def _tokenizer():
    from forgellm.models.loading import load_tokenizer
    from forgellm.models.resolve import materialize, resolve_model

    return load_tokenizer(materialize(resolve_model("smollm2-135m")))


def worker_naive(data: Path, work: Path) -> dict:
    import pandas as pd

    tokenizer = _tokenizer()
    start = time.perf_counter()
    frame = pd.read_csv(data)
    tokenized = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}, {"role": "assistant", "content": a}], tokenize=True
        )
        for q, a in zip(frame["instruction"], frame["response"], strict=True)
    ]
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": len(tokenized)}


def worker_ceiling(data: Path, work: Path) -> dict:
    from forgellm.templates import build_chat_format

    tokenizer = _tokenizer()
    chat = build_chat_format("auto", tokenizer)
    with open(data, encoding="utf-8", newline="") as handle:
        texts = [
            chat.render_text(
                [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["response"]}]
            )
            for r in csv.DictReader(handle)
        ]
    start = time.perf_counter()
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": len(encoded)}


WORKERS = {"forge": worker_forge, "naive": worker_naive, "ceiling": worker_ceiling}


def run_worker(kind: str, data: Path, work: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", kind, "--data", str(data), "--work", str(work)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------- main


def throughput(work: Path, size_mb: int, pairs: int) -> dict:
    data = work / "throughput.csv"
    rows = make_csv(data, size_mb * 1024 * 1024)
    rounds = []
    for number in range(pairs):
        result = {kind: run_worker(kind, data, work) for kind in ("forge", "naive", "ceiling")}
        rate = {kind: r["rows"] / r["seconds"] for kind, r in result.items()}
        rounds.append(
            {
                "rows_per_s": rate,
                "forge_stages": result["forge"]["stages"],
                "vs_naive": rate["forge"] / rate["naive"],
                "vs_ceiling": rate["forge"] / rate["ceiling"],
            }
        )
        print(
            f"  round {number + 1}: forge {rate['forge']:,.0f} rows/s, naive {rate['naive']:,.0f}, "
            f"ceiling {rate['ceiling']:,.0f}",
            flush=True,
        )
    return {
        "input_mb": size_mb,
        "rows": rows,
        "rounds": rounds,
        "median_vs_naive": statistics.median(r["vs_naive"] for r in rounds),
        "median_vs_ceiling": statistics.median(r["vs_ceiling"] for r in rounds),
        # The most any preparation that tokenizes every row can gain over the naive baseline on this
        # machine: the naive loop tokenizes on one core, the ceiling's batched call on all of them.
        "median_ceiling_vs_naive": statistics.median(
            r["rows_per_s"]["ceiling"] / r["rows_per_s"]["naive"] for r in rounds
        ),
    }


def memory(work: Path, size_mb: int, factors: tuple[int, ...] = (1, 2)) -> dict:
    peaks = {}
    for factor in factors:
        data = work / f"memory-{factor}x.csv"
        make_csv(data, factor * size_mb * 1024 * 1024, seed=factor)
        result = run_worker("forge", data, work)
        peaks[f"{factor}x"] = {
            "input_mb": factor * size_mb,
            "peak_rss_mb": result["peak_rss_mb"],
            "rows": result["rows"],
            "seconds": round(result["seconds"], 1),
        }
        data.unlink()
        print(f"  {factor}x ({factor * size_mb} MB): peak RSS {result['peak_rss_mb']:,.0f} MB", flush=True)
    if "1x" in peaks and "2x" in peaks:
        peaks["ratio_2x_over_1x"] = peaks["2x"]["peak_rss_mb"] / peaks["1x"]["peak_rss_mb"]
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--throughput-mb", type=int, default=40)
    parser.add_argument("--memory-mb", type=int, default=256, help="1x input size; 2x is twice that")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--memory-factors", default="1,2", help="multiples of --memory-mb to run, e.g. 1 or 1,2")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "prepare_bench.json")
    parser.add_argument("--worker", choices=list(WORKERS))
    parser.add_argument("--data", type=Path)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    if args.worker:
        result = WORKERS[args.worker](args.data, args.work)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(prefix="prepare-bench-") as tmp:
        work = Path(tmp)
        report: dict = {}
        if not args.skip_throughput:
            print(f"throughput on ~{args.throughput_mb} MB, {args.pairs} interleaved rounds", flush=True)
            report["throughput"] = throughput(work, args.throughput_mb, args.pairs)
        if not args.skip_memory:
            factors = tuple(int(f) for f in args.memory_factors.split(","))
            print(f"memory at {', '.join(f'{f * args.memory_mb} MB' for f in factors)}", flush=True)
            report["memory"] = memory(work, args.memory_mb, factors)
    report["machine"] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": __import__("os").cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if "throughput" in report:
        t = report["throughput"]
        print(f"\nforge vs naive baseline: {t['median_vs_naive']:.2f}x (target >= 3x)")
        print(f"forge vs tokenizer-only ceiling: {t['median_vs_ceiling']:.2f} (target >= 0.7)")
        print(f"ceiling vs naive baseline: {t['median_ceiling_vs_naive']:.2f}x (the bound on forge vs naive here)")
    if "ratio_2x_over_1x" in report.get("memory", {}):
        print(f"peak RSS 2x/1x: {report['memory']['ratio_2x_over_1x']:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
