#!/usr/bin/env bash
# The main job: a project on this machine, a real conversation rendered in the bundled model's own chat
# template, then `forge ignite` on the real support data (study, plan, prepare, train, evaluate, export
# to merged weights + GGUF + Ollama Modelfile) and one answer of the fine-tuned model next to the base
# model's. No GPU, no API key, no network. The first run converts the bundled model (~40 s).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
project="${DEMO_PROJECT:-$here/demo-project}"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "forge --version"
forge --version
step "forge hardware"
forge hardware
step "forge init $project"
forge init "$project" --name support-bot
cd "$project"
step "forge template (a real support conversation, bundled SmolLM2-135M-Instruct)"
forge template --messages "$here/examples/support_chats.jsonl" --row 3
# The main job: every stage in one command, timed. --time-budget gives training a few minutes of this
# machine (the plan measures its speed and sizes the steps to fill them); --yes answers the one question
# ignite asks (train with this plan?).
minutes="${DEMO_TRAIN_MINUTES:-5}"
step "forge ignite examples/customer_support.csv \"Make a customer support bot\" --time-budget $minutes --yes"
started=$(date +%s)
forge ignite "$here/examples/customer_support.csv" "Make a customer support bot" --time-budget "$minutes" --yes
echo "ignite took $(( $(date +%s) - started )) s"
step "forge inference --compare --prompt ... (base model vs fine-tuned, same question)"
forge inference --compare --prompt "I bought a jacket last week and it does not fit. Can I return it?" --max-new-tokens 256
step "forge status"
forge status
