"""`forge inference` as a person uses it: a terminal chat typed into through a pseudo-terminal (pexpect),
a one-shot --prompt whose stdout holds the answer alone, --compare, and the errors a user can meet."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from forgellm.cli.main import app

pexpect = pytest.importorskip("pexpect")
FORGE = "from forgellm.cli.main import run; run()"
QUESTION = "What is the capital of France?"


def _spawn(*args: str, cwd):
    env = {**os.environ, "TERM": "dumb", "PYTHONUNBUFFERED": "1"}  # plain text: no colour codes to match
    return pexpect.spawn(
        sys.executable, ["-c", FORGE, "inference", *args], cwd=str(cwd), env=env, encoding="utf-8",
        timeout=40, dimensions=(40, 160),
    )  # fmt: skip


def _say(child, line: str, *expected: str) -> None:
    child.expect_exact("You> ")
    child.sendline(line)
    for text in expected:
        child.expect_exact(text)


def test_a_chat_in_the_terminal(chat_project):
    root = chat_project(run=True, export=True)
    child = _spawn(cwd=root)
    child.expect_exact("Using the newest export, lyon-bot (--model run|base|PATH for others).")
    child.expect_exact("Model: export lyon-bot (transformers, cpu fp32)")
    _say(child, QUESTION, "Model> Lyon\r\n", "5 tokens")
    _say(child, "/system", "No system prompt. Set one with /system TEXT.")
    _say(child, "/system Answer in one word.", "System prompt set: Answer in one word.")
    _say(child, "/system", "System prompt: Answer in one word.")
    _say(child, "And the capital of Italy?", "Model> Lyon\r\n")  # a second turn, over the history
    _say(child, "/reset", "Conversation cleared.")
    _say(child, "/help", "/reset        forget the conversation")
    _say(child, "/weather", "Unknown command /weather.", "Commands:")
    _say(
        child,
        "",
    )  # an empty line is no message
    _say(child, "/exit", "Bye.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "Traceback" not in child.before


def test_compare_side_by_side_and_ctrl_d_leaves(chat_project):
    root = chat_project(run=True)
    child = _spawn("--compare", "--model", "run", cwd=root)
    child.expect_exact("Base: base ")
    child.expect_exact("Fine-tuned: run 20260101-000000-lora-paris (best)")
    _say(child, QUESTION, "Base: base", "Fine-tuned: run", "Paris", "Lyon", "6 tokens", "5 tokens")
    child.expect_exact("You> ")
    child.sendeof()  # Ctrl-D
    child.expect_exact("Bye.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_one_shot_prints_the_answer_alone_on_stdout(chat_project):
    root = chat_project(run=True, export=True)
    done = subprocess.run(
        [sys.executable, "-c", FORGE, "inference", "--prompt", QUESTION, "--model", "run", "-C", str(root)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Lyon\n"
    assert "Model: run 20260101-000000-lora-paris (best) (transformers, cpu fp32)" in done.stderr
    assert "5 tokens" in done.stderr and "token limit" not in done.stderr


runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, ["inference", *args], catch_exceptions=False)


def test_one_shot_at_the_token_limit_says_so(chat_project):
    root = chat_project()
    result = _invoke("--prompt", QUESTION, "--max-new-tokens", "3", "-C", str(root))
    assert result.exit_code == 0
    assert result.stdout == "Par\n"
    assert "stopped at the token limit (no end-of-turn)" in result.stderr
    assert "Nothing trained yet: using the base model" in result.stderr


def test_one_shot_compare_and_system_prompt(chat_project):
    root = chat_project(export=True)
    result = _invoke("--prompt", QUESTION, "--compare", "--system", "Be brief.", "-C", str(root))
    assert result.exit_code == 0, result.stderr
    assert "Base: base" in result.stdout and "Fine-tuned: export lyon-bot" in result.stdout
    assert "Paris" in result.stdout and "Lyon" in result.stdout


@pytest.mark.parametrize(
    ("args", "message", "fix"),
    [
        (["--model", "export"], "no export yet", "forge export"),
        (["--model", "run"], "no training run yet", "forge train"),
        (["--compare"], "no fine-tuned model yet", "forge train"),
        (["--model", "./missing-folder"], "No such file or folder: ./missing-folder", "Check the path"),
        (["--prompt", " "], "--prompt is empty", "--prompt"),
    ],
)
def test_errors_are_a_message_and_a_fix(chat_project, args, message, fix):
    root = chat_project()
    result = (
        _invoke(*args, "--prompt", QUESTION, "-C", str(root))
        if "--prompt" not in args
        else _invoke(*args, "-C", str(root))
    )
    assert result.exit_code == 1
    assert message in result.stderr and fix in result.stderr.split("Fix:")[1]
    assert "Traceback" not in result.stderr


def test_outside_a_project_the_model_must_be_named(tmp_path):
    result = runner.invoke(app, ["inference", "--prompt", "Hi", "-C", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 1
    assert "no Forge project" in result.stderr and "--model PATH" in result.stderr


def test_a_broken_forge_yaml_does_not_stop_a_named_model(tmp_path):
    """--model names the weights: a damaged forge.yaml of the project around is not read up front (before,
    its error hid the real problem with the model that was named)."""
    (tmp_path / "forge.yaml").write_text("model: [unclosed\n")
    result = _invoke("--model", "./missing-folder", "--prompt", QUESTION, "-C", str(tmp_path))
    assert result.exit_code == 1
    assert "No such file or folder: ./missing-folder" in result.stderr
    assert "forge.yaml" not in result.stderr.split("Fix:")[0]
