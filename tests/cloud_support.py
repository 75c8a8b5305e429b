"""Helpers of the `forge cloud` tests (tests/cloud/): SkyPilot runs in subprocesses whose HOME is a temp
folder, because SkyPilot fixes its state and catalog paths (~/.sky) when it is imported; the suite's own HOME
and ~/.sky stay untouched.
No cloud is reachable and no credential exists there: launching is tested up to SkyPilot's cloud check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECRET_ENV = ("HF_TOKEN", "WANDB_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY")

# A RunPod catalog in SkyPilot's CSV schema (its columns, its GpuInfo form), written by the tests: what
# SkyPilot would have downloaded to ~/.sky/catalogs on a machine that had been online.
RUNPOD_CATALOG = """InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,SpotPrice,GpuInfo
{rows}"""
_ROW = (
    "{n}x_{gpu}_SECURE,{gpu},{n},{cpus},{ram},{price},CA,,"
    "\"{{'Gpus': [{{'Name': '{gpu}', 'Manufacturer': 'NVIDIA', 'Count': {n}, 'MemoryInfo': {{'SizeInMiB': {mib}}}}}], "
    "'TotalGpuMemoryInMiB': {total}}}\""
)


def runpod_rows() -> str:
    offers = [("H100", 1, 2.99, 81920), ("H100", 2, 5.98, 81920), ("H100", 4, 11.96, 81920), ("L4", 1, 0.44, 23034)]
    return "\n".join(
        _ROW.format(n=n, gpu=gpu, cpus=16 * n, ram=80 * n, price=price, mib=mib, total=mib * n)
        for gpu, n, price, mib in offers
    )


def with_runpod_catalog(home: Path) -> None:
    catalog = home / ".sky" / "catalogs" / "v6" / "runpod" / "vms.csv"
    catalog.parent.mkdir(parents=True, exist_ok=True)
    catalog.write_text(RUNPOD_CATALOG.format(rows=runpod_rows()) + "\n")


def make_project(root: Path, *, model: str = "qwen2.5-0.5b", method: str = "lora", extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "train.jsonl").write_text('{"prompt": "hi", "response": "hello"}\n' * 100)
    (root / "forge.yaml").write_text(
        f"model:\n  ref: {model}\n  max_length: 1024\ntraining:\n  method: {method}\n  precision: bf16\n{extra}"
        "data:\n  source: data/train.jsonl\n"
    )
    return root


def _env(home: Path, secrets: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    env.update({"HOME": str(home), "PYTHONPATH": str(ROOT), "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    env.update(secrets or {})
    return env


def forge(home: Path, project: Path, *args: str, secrets: dict[str, str] | None = None, path: str | None = None):
    """`forge ARGS` as a user runs it, in the project, with SkyPilot's state under `home`."""
    env = _env(home, secrets)
    if path is not None:  # a folder put first on the import path (e.g. one that hides SkyPilot)
        env["PYTHONPATH"] = f"{path}{os.pathsep}{ROOT}"
    code = "from forgellm.cli.main import run; run()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=project, env=env, capture_output=True, text=True, timeout=120
    )


def sky_python(home: Path, code: str, secrets: dict[str, str] | None = None) -> object:
    """Run `code` (which prints one JSON value) in a Python with SkyPilot's state under `home`."""
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env(home, secrets), capture_output=True, text=True, timeout=120, cwd=home
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
