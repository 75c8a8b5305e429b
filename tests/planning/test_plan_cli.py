"""`forge plan` on this machine (real probe, real data): the table, forge.yaml, --dry-run, --json, errors."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import unicodedata

import numpy as np
import pytest
from typer.testing import CliRunner

from forgellm.advisor import rules_plan
from forgellm.cli.main import app
from forgellm.config.io import load_config
from forgellm.hardware.probe import probe_hardware

runner = CliRunner()
GOAL = "Make a customer support bot"


@pytest.fixture
def cpu_only_machine():
    if probe_hardware().has_cuda:
        pytest.skip("these checks describe a machine without a GPU")


def bitext_rows(path, n=2000):
    with path.open(encoding="utf-8", newline="") as handle:
        return [row for _, row in zip(range(n), csv.DictReader(handle), strict=False)]


def chars4_p99(rows) -> float:
    """Tokens as the documented fallback counts them: ceil(chars / 4) of the user and assistant text."""
    lengths = [
        math.ceil(len(unicodedata.normalize("NFC", f"{r['instruction'].strip()}\n{r['response'].strip()}")) / 4)
        for r in rows
    ]
    return float(np.percentile(lengths, 99))


def test_plan_on_this_cpu_machine_writes_a_sound_forge_yaml(tmp_path, shared_data, cpu_only_machine):
    data = shared_data / "bitext_customer_support.csv"
    result = runner.invoke(app, ["plan", GOAL, "--data", str(data), "--project", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for words in ("smollm2-135m", "Learning rate", "Memory", "per epoch", f"Next: forge prepare {data}"):
        assert words in result.output
    config = load_config(tmp_path).config
    training = config.training
    assert config.model.ref == "smollm2-135m" and training.method == "lora"
    assert training.learning_rate == pytest.approx(rules_plan.SMALL_LORA_LR) and training.lora.r == 4
    assert training.precision in ("fp32", "bf16")
    assert "estimate:words" in config.data.rationale  # no converted model in this test's cache
    p99 = chars4_p99(bitext_rows(data))
    assert config.model.max_length % 64 == 0
    assert p99 - 2 <= config.model.max_length < p99 + 64 + 2
    assert training.time_budget_minutes == 30 and training.max_steps is not None
    assert config.project.goal == GOAL and config.advisor.provider == "rules"


def test_dry_run_prints_and_writes_nothing(tmp_path, shared_data):
    root = tmp_path / "p"
    result = runner.invoke(app, ["plan", GOAL, "--project", str(root), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "Dry run: nothing was written" in result.output and not root.exists()
    assert "Next: forge prepare FILE" in result.output


def test_json_output(tmp_path, shared_data):
    data = shared_data / "openai_messages_toy.jsonl"
    result = runner.invoke(
        app, ["plan", GOAL, "--data", str(data), "--project", str(tmp_path), "--json", "--epochs", "1"]
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["config_path"] == str(tmp_path / "forge.yaml")
    assert plan["model"]["key"] == plan["config"]["model"]["ref"]
    assert plan["training"]["epochs"] == 1
    assert [(o["key"], o["value"]) for o in plan["overrides"]] == [("training.epochs", 1.0)]
    assert plan["memory"]["total_bytes"] < plan["memory"]["budget_bytes"]
    assert plan["data"]["format"] == "messages" and plan["time"]["total_steps"] >= 1


def test_overridden_flags_are_listed(tmp_path):
    result = runner.invoke(
        app, ["plan", GOAL, "--project", str(tmp_path), "--batch-size", "2", "--max-steps", "7", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "training.micro_batch_size = 2" in result.output and "training.max_steps = 7" in result.output


def test_no_goal_and_no_data_is_an_error_with_a_fix(tmp_path):
    result = runner.invoke(app, ["plan", "--project", str(tmp_path)])
    assert result.exit_code == 1
    assert "Error [usage-invalid]:" in result.output and "Fix:" in result.output and "Traceback" not in result.output


def test_unknown_model_lists_suggestions(tmp_path):
    result = runner.invoke(app, ["plan", GOAL, "--model", "smolm2-135m", "--project", str(tmp_path)])
    assert result.exit_code == 1
    assert "Unknown model" in result.output and "smollm2-135m" in result.output
    assert not (tmp_path / "forge.yaml").exists()


def test_advisor_flag_overrides_forge_yaml_for_this_run(tmp_path):
    result = runner.invoke(app, ["plan", GOAL, "--advisor", "gemini", "--project", str(tmp_path), "--dry-run"])
    assert result.exit_code == 1  # no Gemini key in the isolated FORGE_HOME: the flag was honoured
    assert "Gemini" in result.output and "forge login" in result.output


def test_plan_dry_run_without_data_imports_no_torch(tmp_path):
    code = (
        "import sys\nfrom forgellm.cli.main import app\n"
        f"try:\n    app(['plan', 'Make a bot', '--project', {str(tmp_path)!r}, '--dry-run'])\n"
        "except SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().endswith("NO-TORCH"), done.stdout + done.stderr


@pytest.mark.slow
def test_token_lengths_come_from_the_bundled_tokenizer_when_converted(tmp_path, shared_data, bundled_model_dir):
    from forgellm.data.prepare.recipe import to_example
    from forgellm.data.read.formats import detect_format
    from forgellm.data.read.readers import open_dataset, sample_records
    from forgellm.models.loading import load_tokenizer

    data = shared_data / "bitext_customer_support.csv"
    result = runner.invoke(app, ["plan", GOAL, "--data", str(data), "--project", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["data"]["token_counter"] == "local:smollm2-135m"
    tokenizer = load_tokenizer(bundled_model_dir)
    records = sample_records(open_dataset(data), 2000)
    detection = detect_format(records)
    texts = [
        tokenizer.apply_chat_template(to_example(r, detection.format, detection.recipe).messages, tokenize=False)
        for r in records
    ]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    p99 = float(np.percentile(lengths, 99))
    assert plan["data"]["tokens"]["p99"] == pytest.approx(p99, abs=1)
    assert plan["model"]["max_length"] == math.ceil(p99 / 64) * 64
