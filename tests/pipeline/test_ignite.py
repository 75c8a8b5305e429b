"""`forge ignite` end to end on the tiny model and real support data: every stage, the summary, a re-run
that reuses everything, a kill -9 at each stage followed by the same command, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from forgellm.cli.main import app

runner = CliRunner()
GOAL = "Make a customer support bot"
TITLES = ("1/7 Project", "2/7 Study the data", "3/7 Plan", "4/7 Prepare", "5/7 Train", "6/7 Evaluate", "7/7 Export")


@pytest.fixture
def ignite_args(tmp_path, tiny_causal_lm_dir, _support_csv, monkeypatch):
    """The command line for the tiny model; checkpoints every step so a kill in training has one to resume."""
    monkeypatch.setenv("FORGE_TRAINING__SAVE_EVERY_STEPS", "1")
    monkeypatch.setenv("FORGE_TRAINING__EVAL_EVERY_STEPS", "2")
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")  # no Ollama here: registration is skipped
    project = tmp_path / "bot"
    args = [
        "ignite",
        str(_support_csv),
        GOAL,
        "--model",
        str(tiny_causal_lm_dir),
        "--max-steps",
        "4",
        "--yes",
        "-C",
        str(project),
    ]
    return project, args


def _state(project: Path) -> dict:
    return json.loads((project / ".forge" / "ignite.json").read_text())


def test_ignite_runs_every_stage_then_a_rerun_reuses_them(ignite_args):
    from forgellm.training.runs import list_runs

    project, args = ignite_args
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output[-4000:]
    out = result.output
    for title in TITLES:
        assert title in out, title
    assert "Plan (rules advisor)" in out and "A held-out question:" in out and "fine-tuned" in out
    assert "forge inference" in out and "ollama create bot -f exports/bot/Modelfile" in out
    assert set(_state(project)["done"]) == {"init", "study", "plan", "prepare", "train", "eval", "export"}
    export = project / "exports" / "bot"
    assert {"bot-f16.gguf", "bot-q8_0.gguf", "Modelfile", "README.md", "metadata.json"} <= {
        p.name for p in export.iterdir()
    }
    report = json.loads((project / "reports" / "eval.json").read_text())
    (run_dir,) = list_runs(project)
    assert report["run_id"] == run_dir.name
    assert json.loads((export / "metadata.json").read_text())["run_id"] == run_dir.name

    started = time.perf_counter()
    again = runner.invoke(app, [*args, "--json"])
    assert again.exit_code == 0, again.output[-3000:]
    stages = json.loads(again.stdout)["stages"]
    assert [s["status"] for s in stages] == ["reused"] * 7
    assert time.perf_counter() - started < 30 and len(list_runs(project)) == 1


def _spawn(args: list[str]) -> subprocess.Popen:
    code = "from forgellm.cli.main import run; run()"
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def _kill_when(proc: subprocess.Popen, marker: str, timeout: float = 300) -> str:
    """Read the output until `marker` appears, then kill -9 the whole command (its training worker dies with it)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            return "".join(seen)
    proc.kill()
    raise AssertionError(f"never saw {marker!r}; output:\n{''.join(seen)[-3000:]}")


def test_kill_9_at_each_stage_then_the_same_command_resumes(ignite_args):
    from forgellm.project.run_record import list_checkpoints
    from forgellm.training.runs import list_runs
    from forgellm.training.summary import read_metrics

    project, args = ignite_args
    # Each round kills the command as the next stage starts (in training: after its first checkpoint),
    # so every round must resume exactly where the previous one died.
    rounds = [
        ("2/7 Study", ["init"]),
        ("3/7 Plan", ["init", "study"]),
        ("4/7 Prepare", ["init", "study", "plan"]),
        ("checkpoint interval", ["init", "study", "plan", "prepare"]),
        ("6/7 Evaluate", ["init", "study", "plan", "prepare", "train"]),
        ("7/7 Export", ["init", "study", "plan", "prepare", "train", "eval"]),
    ]
    for marker, done in rounds:
        _kill_when(_spawn(args), marker)
        assert list(_state(project)["done"]) == done, marker
        if marker == "checkpoint interval":
            (run_dir,) = list_runs(project)
            assert list_checkpoints(run_dir), "killed before any checkpoint"
    proc = _spawn(args)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-4000:]
    assert list(_state(project)["done"]) == ["init", "study", "plan", "prepare", "train", "eval", "export"]
    (run_dir,) = list_runs(project)  # the killed training was resumed, not started again
    starts = [r for r in read_metrics(run_dir) if r.get("event") == "start"]
    assert starts[0]["step"] == 0 and starts[-1]["step"] >= 1
    assert (project / "exports" / "bot" / "bot-q8_0.gguf").is_file()
    assert not list((project / "exports").glob(".*"))


def test_dry_run_shows_the_plan_and_creates_nothing(ignite_args):
    project, args = ignite_args
    result = runner.invoke(app, [*args, "--dry-run"])
    assert result.exit_code == 0, result.output[-3000:]
    assert "Plan (rules advisor)" in result.output and "Dry run: nothing was written." in result.output
    assert "Stopped after the plan" in result.output
    assert not project.exists()


def test_without_yes_and_without_a_terminal_it_asks_for_yes(ignite_args):
    project, args = ignite_args
    result = runner.invoke(app, [a for a in args if a != "--yes"])
    assert result.exit_code == 1
    assert "Start training with this plan?" in result.output and "--yes" in result.output
    assert list(_state(project)["done"]) == ["init", "study", "plan", "prepare"]


def test_bad_input_is_said_clearly(tmp_path):
    missing = runner.invoke(app, ["ignite", str(tmp_path / "nope.csv"), GOAL, "-C", str(tmp_path / "p")])
    assert missing.exit_code == 1 and "does not exist" in missing.output
    data = tmp_path / "d.csv"
    data.write_text("a,b\n1,2\n")
    no_goal = runner.invoke(app, ["ignite", str(data), "  ", "-C", str(tmp_path / "p")])
    assert no_goal.exit_code == 1 and "needs a goal" in no_goal.output


def test_another_models_plan_is_not_replaced_without_asking(ignite_args, tiny_causal_lm_dir, tmp_path):
    import shutil

    project, args = ignite_args
    planned = runner.invoke(
        app, ["plan", GOAL, "--data", args[1], "--model", str(tiny_causal_lm_dir), "-C", str(project)]
    )
    assert planned.exit_code == 0, planned.output[-3000:]
    other = shutil.copytree(tiny_causal_lm_dir, tmp_path / "other-model")
    changed = [str(other) if a == str(tiny_causal_lm_dir) else a for a in args if a != "--yes"]
    refused = runner.invoke(app, changed)
    assert refused.exit_code == 1
    assert "Replace the plan?" in refused.output and "--yes" in refused.output
    from forgellm.config.io import load_config

    assert load_config(project).config.model.ref == str(tiny_causal_lm_dir)


@pytest.mark.slow
def test_ignite_with_the_bundled_model_on_real_support_data(tmp_path, bundled_model_dir, _support_csv, monkeypatch):
    """The demo path in small: SmolLM2-135M, real Bitext rows, a 1.5-minute time budget (no step count), through
    GGUF export. Training keeps to its budget, and the model it gives is better than the base on held-out data."""
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")
    project = tmp_path / "support-bot"
    budget = 1.5
    args = ["ignite", str(_support_csv), GOAL, "--time-budget", str(budget), "--yes", "-C", str(project)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output[-4000:]
    training = json.loads((project / "reports" / "eval.json").read_text())
    config = json.loads((project / "exports" / "support-bot" / "metadata.json").read_text())
    assert config["base_model"] == "smollm2-135m" and config["training_type"] == "lora"
    assert "<|im_end|>" in config["stop"]
    assert _state(project)["done"]["train"]["seconds"] <= budget * 60 * 1.1  # the budget, +10%
    summary = training["summary"]
    base, tuned = summary["base"], summary["tuned"]
    report = json.dumps({"base": base, "tuned": tuned, "verdict": summary["verdict"]}, indent=1)
    assert tuned["loss"] <= 0.95 * base["loss"], report  # held-out test split
    answered = min(32, training["settings"]["test_conversations"])  # ignite answers up to 32 test questions
    assert summary["samples_generated"] == answered and tuned["stop_rate"] >= base["stop_rate"], report
    assert (project / "exports" / "support-bot" / "support-bot-q8_0.gguf").stat().st_size > 100_000_000
