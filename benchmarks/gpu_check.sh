#!/usr/bin/env bash
# gpu_check.sh: on a GPU machine WITHOUT network, train bf16 LoRA and QLoRA a few steps through Forge on a
# local 0.5-1.5B model and report real tokens/s and peak GPU memory (benchmarks/gpu_check.py), then
# `forge docker probe` when a Docker engine answers. Finishes within ~8 minutes on one H100.
#
#   benchmarks/gpu_check.sh --model /carried/Qwen2.5-0.5B-Instruct [--wheels /carried/wheels] [--steps 30]
#                           [--python python3] [--out FILE] [--cpu-smoke]
#
# Environment instead of flags: FORGE_GPU_CHECK_MODEL, FORGE_GPU_CHECK_WHEELS, FORGE_GPU_CHECK_PYTHON.
# --wheels: a folder of wheels (forgellm and its dependencies, torch cu128, bitsandbytes) installed with
# `pip --no-index` into a fresh virtual environment under the work folder; without it the given Python
# must already have Forge. Exit codes: 0 done, 2 no CUDA GPU (or bad arguments), other: a step failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
model=${FORGE_GPU_CHECK_MODEL:-}
wheels=${FORGE_GPU_CHECK_WHEELS:-}
python=${FORGE_GPU_CHECK_PYTHON:-python3}
steps=30
out="$here/results/gpu_check.json"
smoke=()
limit_s=${FORGE_GPU_CHECK_TIMEOUT:-450}  # the training part; the whole run must stay under 8 minutes

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "gpu_check: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --model) model=${2:?--model needs a folder}; shift 2 ;;
        --wheels) wheels=${2:?--wheels needs a folder}; shift 2 ;;
        --python) python=${2:?--python needs an interpreter}; shift 2 ;;
        --steps) steps=${2:?--steps needs a number}; shift 2 ;;
        --out) out=${2:?--out needs a file}; shift 2 ;;
        --cpu-smoke) smoke=(--cpu-smoke); shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ $steps =~ ^[0-9]+$ ]] || die "--steps must be a whole number (got $steps)"
if [[ ${#smoke[@]} -eq 0 ]]; then
    [[ -n $model ]] || die "--model (or FORGE_GPU_CHECK_MODEL) must name a local Hugging Face model folder"
    [[ -f $model/config.json ]] || die "$model has no config.json: give a local Hugging Face model folder"
fi
[[ -z $wheels || -d $wheels ]] || die "--wheels $wheels is not a folder"

# Nothing may reach the network: the hub and Forge stay offline, pip only reads the carried wheels.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 FORGE_OFFLINE=1 PIP_NO_INDEX=1

work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [[ -n $wheels ]]; then
    echo "installing Forge from $wheels (no index)"
    "$python" -m venv "$work/venv"
    "$work/venv/bin/pip" install --quiet --no-index --find-links "$wheels" forgellm bitsandbytes
    python=$work/venv/bin/python
fi
"$python" -c "import forgellm" 2>/dev/null || die "$python cannot import forgellm: pass --wheels or --python"

# The GPU must be there before anything is installed or prepared (gpu_check.py refuses too: exit 2).
if [[ ${#smoke[@]} -eq 0 ]]; then
    "$python" - <<'EOF' || exit 2
import sys
try:
    import torch
except ImportError as exc:
    sys.exit(f"gpu_check: torch is not importable ({exc}); this check needs an NVIDIA GPU and torch with CUDA")
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: no CUDA GPU is visible to torch {torch.__version__}; run this on a GPU machine")
print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__} (CUDA {torch.version.cuda})")
EOF
fi

model_args=()
[[ -n $model ]] && model_args=(--model "$model")
timeout --signal=INT "$limit_s" "$python" "$here/gpu_check.py" "${model_args[@]}" --steps "$steps" --out "$out" \
    "${smoke[@]}"
echo "results: $out"

# What a container of Forge's image sees here (GPU passthrough, arch flags, driver): only with an engine.
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    forge_cmd=("$python" -c "from forgellm.cli.main import run; run()")
    "${forge_cmd[@]}" docker probe --json > "${out%.json}_docker_probe.json" \
        && echo "docker probe: ${out%.json}_docker_probe.json" \
        || echo "docker probe reported a problem (exit $?): see ${out%.json}_docker_probe.json"
else
    echo "docker probe: skipped (no Docker engine answers)"
fi
