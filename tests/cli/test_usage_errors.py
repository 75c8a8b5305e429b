"""Usage mistakes are the framework's to report: the installed `forge` script prints the command's usage
and what was wrong (exit 2), never "Internal error ... a bug in Forge". Run as a user runs it, in a
subprocess of the console script, because the in-process test runner does not go through it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FORGE = Path(sys.executable).with_name("forge")


@pytest.mark.parametrize(
    ("args", "usage", "problem"),
    [
        (["study"], "Usage: forge study", "Missing argument 'file'"),
        (["train", "--bogus"], "Usage: forge train", "No such option: --bogus"),
        (["config", "validate", "forge.yaml"], "Usage: forge config validate", "unexpected extra argument"),
        (["--bogus"], "Usage: forge", "No such option: --bogus"),
        (["stduy"], "Usage: forge", "No such command 'stduy'"),
    ],
)
def test_usage_mistakes_print_usage_not_an_internal_error(tmp_path, args, usage, problem):
    if not FORGE.is_file():
        pytest.skip(f"the console script is not installed beside {sys.executable}")
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    done = subprocess.run([str(FORGE), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert usage in done.stderr and problem in done.stderr
    assert "Internal error" not in done.stderr and "bug in Forge" not in done.stderr


def test_a_real_bug_is_still_called_one():
    """The pass-through is for the framework's own errors only: an ordinary exception from a command is
    still reported as a bug (exit 2) with the FORGE_DEBUG hint."""
    from typer.testing import CliRunner

    from forgellm.cli.app import app

    @app.command("explode-for-test", hidden=True)
    def explode() -> None:
        raise ValueError("boom")

    try:
        result = CliRunner().invoke(app, ["explode-for-test"])
    finally:
        app.registered_commands[:] = [c for c in app.registered_commands if c.name != "explode-for-test"]
    assert result.exit_code == 2
    assert "Internal error: ValueError: boom" in result.stderr and "FORGE_DEBUG=1" in result.stderr


def test_config_validate_checks_that_the_model_exists(tmp_path):
    """The schema cannot see a misspelt model; validate does (before, it said "valid" and prepare failed)."""
    import json

    from typer.testing import CliRunner

    from forgellm.cli.main import app

    runner = CliRunner()
    assert runner.invoke(app, ["init", str(tmp_path)]).exit_code == 0
    config = tmp_path / "forge.yaml"
    config.write_text(config.read_text().replace("ref: smollm2-135m", "ref: qwne-7b"))
    result = runner.invoke(app, ["config", "validate", "--path", str(config), "--json"])
    assert result.exit_code == 1
    verdict = json.loads(result.stdout)
    assert verdict["valid"] is False and verdict["code"] == "model-unknown"
    assert "qwen2.5-7b" in verdict["fix"]  # the nearest catalog names
    config.write_text(config.read_text().replace("ref: qwne-7b", "ref: smollm2-135m"))
    assert runner.invoke(app, ["config", "validate", "--path", str(config)]).exit_code == 0
