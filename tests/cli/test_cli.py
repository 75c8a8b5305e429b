from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from forgellm import __version__
from forgellm.cli.main import app
from forgellm.config.settings import credentials_path

runner = CliRunner()


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, catch_exceptions=False)


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"forge {__version__}"


def test_help_lists_only_real_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("init", "status", "models", "config", "hardware", "login", "logout", "template", "plan", "train",
                    "export", "inference", "ignite", "eval"):
        assert command in result.output


def test_help_is_fast_and_imports_nothing_heavy():
    code = (
        "import sys, time; t=time.perf_counter()\n"
        "from forgellm.cli.main import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy=[m for m in ('torch','transformers','gguf','huggingface_hub','jinja2') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert "HEAVY []" in out.stdout
    # Generous bound for a loaded CI machine; typically ~0.3 s including interpreter start.
    assert elapsed < 3.0


def test_init_status_json_round(tmp_path):
    project = tmp_path / "bot"
    result = invoke(
        "init",
        str(project),
        "--advisor",
        "openai",
        "--base-url",
        "http://127.0.0.1:8000/v1",
        "--advisor-model",
        "local-model",
        "--json",
    )
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert "forge.yaml" in data["created"] and data["existed"] == []
    status = json.loads(invoke("status", str(project), "--json").output)
    assert status["advisor"] == {
        "provider": "openai",
        "model": "local-model",
        "base_url": "http://127.0.0.1:8000/v1",
        "key": {"provider": "openai", "available": False, "source": None},
    }
    assert status["model"]["ref"] == "smollm2-135m"
    human = invoke("status", str(project))
    assert "forge login --provider openai" in human.output


def test_init_twice_reports_kept(tmp_path):
    invoke("init", str(tmp_path))
    second = invoke("init", str(tmp_path))
    assert second.exit_code == 0
    assert "created" not in second.output and "forge.yaml (kept)" in second.output


def test_init_with_api_key_never_writes_it_into_project(tmp_path):
    result = invoke("init", str(tmp_path / "p"), "--advisor", "gemini", "--api-key", "AIza-xyz")
    assert result.exit_code == 0 and "mode 0600" in result.output
    assert "AIza-xyz" not in result.output
    assert stat.S_IMODE(credentials_path().stat().st_mode) == 0o600
    for path in (tmp_path / "p").rglob("*"):
        assert not path.is_file() or "AIza-xyz" not in path.read_text(errors="replace")


def test_user_error_is_a_message_not_a_traceback(tmp_path):
    result = runner.invoke(app, ["init", str(tmp_path), "--advisor", "rules", "--api-key", "k"])
    assert result.exit_code == 1
    assert "Error [usage-invalid]:" in result.output and "Fix:" in result.output
    assert "Traceback" not in result.output


def test_the_installed_command_prints_the_error_code(tmp_path):
    # What a user sees from the console script, not only the in-process runner: the code with the message.
    forge = os.path.join(os.path.dirname(sys.executable), "forge")
    if not os.path.exists(forge):
        pytest.skip("console script not installed in this environment")
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run(
        [forge, "train", "--project", str(tmp_path)], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 1
    assert "Error [project-not-found]:" in out.stderr and "Fix:" in out.stderr and "Traceback" not in out.stderr


def test_login_hidden_prompt_and_logout():
    result = invoke("login", "--provider", "gemini", input="AIza-secret-1\n")
    assert result.exit_code == 0 and "AIza-secret-1" not in result.output
    assert json.loads(credentials_path().read_text()) == {"gemini": "AIza-secret-1"}
    assert stat.S_IMODE(credentials_path().stat().st_mode) == 0o600
    assert "Removed" in invoke("logout", "--provider", "gemini").output
    assert "nothing to remove" in invoke("logout", "--provider", "gemini").output


def test_login_notes_environment_precedence(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "from-env")
    result = invoke("login", input="stored\n")
    assert "GEMINI_API_KEY is set" in result.output


def test_config_show_validate_upgrade(tmp_path):
    invoke("init", str(tmp_path))
    path = str(tmp_path / "forge.yaml")
    shown = json.loads(invoke("config", "show", "--path", path, "--json").output)
    assert shown["version"] == 2 and shown["training"]["method"] == "lora"
    assert invoke("config", "validate", "--path", path).exit_code == 0
    (tmp_path / "forge.yaml").write_text("version: 1\nmodel:\n  name: qwen\ntraining:\n  lr: 0.0003\n")
    validated = invoke("config", "validate", "--path", path)
    assert validated.exit_code == 0 and "forge config upgrade" in validated.output
    upgraded = invoke("config", "upgrade", "--path", path)
    assert upgraded.exit_code == 0 and (tmp_path / "forge.yaml.v1.bak").exists()
    again = json.loads(invoke("config", "validate", "--path", path, "--json").output)
    assert again["valid"] and again["migration_notes"] == [] and again["file_version"] == 2


def test_config_validate_reports_every_problem(tmp_path):
    (tmp_path / "forge.yaml").write_text("training:\n  method: lorax\n  epochs: -1\nexport:\n  quantizations: [q9]\n")
    result = runner.invoke(app, ["config", "validate", "--path", str(tmp_path)])
    assert result.exit_code == 1
    assert "3 problems" in result.output and "Error [config-invalid]:" in result.output
    for key in ("training.method", "training.epochs", "export.quantizations.0"):
        assert key in result.output
    as_json = runner.invoke(app, ["config", "validate", "--path", str(tmp_path), "--json"])
    verdict = json.loads(as_json.output)
    assert as_json.exit_code == 1 and len(verdict["problems"]) == 3 and verdict["code"] == "config-invalid"


def test_config_env_override_shown(tmp_path, monkeypatch):
    invoke("init", str(tmp_path))
    monkeypatch.setenv("FORGE_TRAINING__EPOCHS", "1")
    shown = invoke("config", "show", "--path", str(tmp_path))
    assert "training.epochs comes from the environment variable FORGE_TRAINING__EPOCHS" in shown.output


def test_hardware_json_has_stable_keys():
    data = json.loads(invoke("hardware", "--json").output)
    for key in (
        "cpu_physical_cores",
        "ram_total_bytes",
        "ram_available_bytes",
        "disk_free_bytes",
        "gpus",
        "bf16",
        "accelerator",
        "mps",
    ):
        assert key in data
    if not data["gpus"]:
        assert data["accelerator"] == "CPU only"
        assert "CPU only" in invoke("hardware").output


def test_models_json_covers_catalog_with_fits():
    data = json.loads(invoke("models", "--json").output)
    keys = {m["key"] for m in data["models"]}
    assert {
        "smollm2-135m",
        "qwen2.5-0.5b",
        "llama-3.2-1b",
        "gemma-2-2b",
        "mistral-7b",
        "phi-3.5-mini",
    } <= keys
    smol = next(m for m in data["models"] if m["key"] == "smollm2-135m")
    assert smol["fit"]["lora"]["verdict"] in {"fits", "tight", "no", "needs GPU"}
    assert smol["instruct_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "SmolLM2" in invoke("models").output or "smollm2" in invoke("models").output


def test_console_script_installed():
    forge = os.path.join(os.path.dirname(sys.executable), "forge")
    if not os.path.exists(forge):
        pytest.skip("console script not installed in this environment")
    out = subprocess.run([forge, "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and __version__ in out.stdout
