#!/usr/bin/env bash
# The main job, as far as Forge goes today: a project, this machine, the catalog, a real conversation
# rendered in the bundled model's own chat template (first run converts the model, ~40 s), a data
# study, a plan for the goal (model, hyper-parameters, estimates -> forge.yaml) and a validated,
# tokenized train/val/test preparation of the demo data set.
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
step "forge config validate"
forge config validate
step "forge models"
forge models
step "forge template (a real support conversation, bundled SmolLM2-135M-Instruct)"
forge template --messages "$here/examples/support_chats.jsonl" --row 3
step "forge study examples/customer_support.csv (report in reports/study.html)"
forge study "$here/examples/customer_support.csv"
step "forge plan \"Make a customer support bot\" --data examples/customer_support.csv (offline rules advisor)"
forge plan "Make a customer support bot" --data "$here/examples/customer_support.csv"
step "forge prepare examples/customer_support.csv"
forge prepare "$here/examples/customer_support.csv" --show-recipe
forge prepare "$here/examples/customer_support.csv"
step "forge status"
forge status
