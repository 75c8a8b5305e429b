"""One precision: what `forge plan` measures and writes, what `forge hardware` prints and what the trainer
uses are the same value (the real probe of this machine, a real measurement of the tiny model)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from forgellm.cli.main import app
from forgellm.config.io import load_config

runner = CliRunner()


def test_plan_hardware_and_trainer_agree(tmp_path, tiny_causal_lm_dir, _support_csv, monkeypatch):
    project = tmp_path / "bot"
    model = str(tiny_causal_lm_dir)
    planned = runner.invoke(app, ["plan", "Make a support bot", "--data", str(_support_csv), "--model", model,
                                  "--max-steps", "2", "--project", str(project), "--json"])  # fmt: skip
    assert planned.exit_code == 0, planned.output
    plan = json.loads(planned.output[planned.output.index("{") :])
    decision = plan["precision"]
    written = load_config(project).config.training
    assert decision["source"] == "measured" and decision["measurements"]  # a CPU: measured, not assumed
    assert written.precision == decision["precision"] and decision["reason"] in written.rationale

    monkeypatch.chdir(project)
    shown = runner.invoke(app, ["hardware", "--json"])
    assert shown.exit_code == 0, shown.output
    hardware = json.loads(shown.output)
    assert hardware["precision"]["precision"] == written.precision and hardware["precision"]["model"] == model
    text = runner.invoke(app, ["hardware"]).output
    assert f"Training precision Forge would use for {model}: {written.precision}" in " ".join(text.split())

    prepared = runner.invoke(app, ["prepare", str(_support_csv)])
    assert prepared.exit_code == 0, prepared.output
    trained = runner.invoke(app, ["train", "--json"])
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.output[trained.output.index("{") :])
    metrics = (project / "runs" / summary["run_id"] / "metrics.jsonl").read_text().splitlines()
    start = next(json.loads(line) for line in metrics if json.loads(line)["event"] == "start")
    assert start["precision"] == written.precision
