"""docker_startup: what starting a stage in a container of Forge's image costs, against starting it locally.

    python benchmarks/docker_startup.py --image forge:cpu            # 5 interleaved rounds after a warm-up
    python benchmarks/docker_startup.py --image forge-dev:cpu --repeats 9

Each round runs, in this order, in fresh processes:
- local:  ``python -c "import forgellm.training.worker"`` (what the local runner's worker imports first) and
  ``forge --version``, in this Python;
- docker: the same two commands in a container of the image, started as the docker runner starts one
  (docker SDK: create with ``--network none``, start, wait, remove), timed from create to removed;
- docker bare: ``true`` in a container of the image: the engine's own share (create, start, wait, remove).

Warm: one untimed round first (page cache, the engine's image layers). Figures: medians over the rounds of
each wall time, the per-round ratio docker / local and the added seconds (../shared/BENCHMARKS.md).
Target (issue 17): a warm container start adds < 10 s. Results: benchmarks/results/docker_startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMANDS = {
    "import_worker": ["python", "-c", "import forgellm.training.worker"],
    "forge_version": [
        "python",
        "-c",
        "import sys; sys.argv = ['forge', '--version']; from forgellm.cli.main import run; run()",
    ],
}
TARGET_ADDED_S = 10.0


def timed_local(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *command[1:]], check=True, capture_output=True)
    return time.perf_counter() - started


def timed_container(client, image: str, command: list[str]) -> float:
    started = time.perf_counter()
    container = client.containers.create(
        image, entrypoint=command[:1], command=command[1:], network_mode="none", labels={"forge.role": "bench"}
    )
    try:
        container.start()
        status = container.wait(timeout=120)
    finally:
        container.remove(force=True)
    seconds = time.perf_counter() - started
    if status.get("StatusCode") != 0:
        raise SystemExit(f"{' '.join(command)} failed in {image}: exit {status.get('StatusCode')}")
    return seconds


def one_round(client, image: str) -> dict[str, float]:
    figures: dict[str, float] = {}
    for name, command in COMMANDS.items():
        figures[f"local_{name}"] = timed_local(command)
        figures[f"docker_{name}"] = timed_container(client, image, command)
    figures["docker_bare"] = timed_container(client, image, ["true"])
    return figures


def summarise(rounds: list[dict[str, float]]) -> dict:
    medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    compared = {}
    for name in COMMANDS:
        ratios = [r[f"docker_{name}"] / r[f"local_{name}"] for r in rounds]
        added = [r[f"docker_{name}"] - r[f"local_{name}"] for r in rounds]
        compared[name] = {
            "median_ratio": statistics.median(ratios),
            "median_added_s": statistics.median(added),
            "target_added_s": TARGET_ADDED_S,
            "meets_target": statistics.median(added) < TARGET_ADDED_S,
        }
    return {"median_seconds": medians, "docker_vs_local": compared}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default=os.environ.get("FORGE_DOCKER_IMAGE", "forge:cpu"))
    parser.add_argument("--repeats", type=int, default=5, help="timed interleaved rounds (after one warm-up)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "docker_startup.json")
    args = parser.parse_args()
    from forgellm.runtime.engine import image_attrs, require_engine

    client = require_engine("docker_startup")
    attrs = image_attrs(client, args.image)
    if attrs is None:
        raise SystemExit(f"no image {args.image} on the engine: build it (`forge docker build`) or pass --image")
    one_round(client, args.image)  # warm-up, untimed
    rounds = []
    for number in range(args.repeats):
        rounds.append(one_round(client, args.image))
        shown = ", ".join(f"{k} {v:.2f}s" for k, v in rounds[-1].items())
        print(f"  round {number + 1}: {shown}", flush=True)
    report = {
        "settings": {
            "image": args.image,
            "image_id": attrs.get("Id"),
            "repeats": args.repeats,
            "warm_up_rounds": 1,
            "commands": COMMANDS,
            "container": "network none, created/started/waited/removed via the SDK",
        },
        **summarise(rounds),
        "rounds": rounds,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "engine": client.version().get("Version"),
            "note": "shared machine: absolute figures are noisy, ratios are interleaved",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    for name, figures in report["docker_vs_local"].items():
        local, docker = report["median_seconds"][f"local_{name}"], report["median_seconds"][f"docker_{name}"]
        print(
            f"{name:<14} local {local:5.2f}s  docker {docker:5.2f}s  ratio {figures['median_ratio']:.2f}x  "
            f"added {figures['median_added_s']:+.2f}s (target < {TARGET_ADDED_S:g} s)"
        )
    print(f"docker bare (`true`): {report['median_seconds']['docker_bare']:.2f}s")


if __name__ == "__main__":
    main()
