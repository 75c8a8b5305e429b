"""`forge plan --apply-replay`: eval's recommended share of general data written into forge.yaml as a
mixture, for a one-stage project (the shipped general set copied in) and for the IFT stage of a pipeline."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from forgellm.cli.main import app
from forgellm.config.io import load_config, save_config
from forgellm.config.schema import ForgeConfig
from forgellm.config.stages import stage_config
from forgellm.project import init_project

runner = CliRunner()


def _eval(root, ratio: float | None) -> None:
    forgetting = {"losses": {"base": 2.0, "tuned": 2.4}, "rise": 0.2, "forgot": ratio is not None}
    if ratio is not None:
        forgetting["recommendation"] = {"role": "general", "ratio": ratio, "current": 0.0, "why": "general loss +20%"}
    else:
        forgetting["message"] = "No forgetting: general loss base 2.000 -> tuned 2.010 (+0.5%)."
    (root / "reports" / "eval.json").write_text(json.dumps({"run_id": "r", "summary": {"forgetting": forgetting}}))


def _project(tmp_path, config: dict) -> object:
    root = tmp_path / "bot"
    init_project(root)
    save_config(ForgeConfig.model_validate(config), root / "forge.yaml")
    return root


def test_a_one_source_project_gets_the_shipped_general_set_at_the_recommended_share(tmp_path):
    root = _project(tmp_path, {"data": {"source": "support.csv", "format": "qa"}})
    _eval(root, 0.25)
    result = runner.invoke(app, ["plan", "--apply-replay", "-C", str(root)])
    assert result.exit_code == 0, result.output
    config = load_config(root).config
    assert [(s.name, s.role, s.ratio) for s in config.data.sources] == [
        ("domain", "domain", 0.75),
        ("general", "general", 0.25),
    ]
    assert config.data.sources[0].path == "support.csv" and config.data.sources[0].format == "qa"
    assert (root / config.data.sources[1].path).is_file() and (root / "data/general/LICENSE.md").is_file()
    assert "Replay: 25% general data" in config.data.rationale and "25%" in result.output


def test_the_ift_stage_of_a_pipeline_gets_its_general_source_reweighted(tmp_path):
    sources = [{"name": "conversations", "path": "chats", "role": "domain", "ratio": 0.75},
               {"name": "general", "path": "alpaca.json", "role": "general", "ratio": 0.25}]  # fmt: skip
    stages = [{"name": "cpt", "training": {"stage": "cpt"}, "data": {"source": "docs", "format": "text"}},
              {"name": "ift", "after": "cpt", "data": {"sources": sources}}]  # fmt: skip
    root = _project(tmp_path, {"data": {"source": "chats"}, "stages": stages})
    _eval(root, 0.35)
    assert runner.invoke(app, ["plan", "--apply-replay", "--dry-run", "-C", str(root)]).exit_code == 0
    assert stage_config(load_config(root).config, "ift").data.sources[1].ratio == 0.25  # dry run: unchanged
    result = runner.invoke(app, ["plan", "--apply-replay", "-C", str(root)])
    assert result.exit_code == 0, result.output
    config = load_config(root).config
    ift = stage_config(config, "ift")
    assert [(s.name, s.ratio) for s in ift.data.sources] == [("conversations", 0.65), ("general", 0.35)]
    assert stage_config(config, "cpt").data.source == "docs" and config.data.source == "chats"
    assert "Replay: 35%" in ift.training.rationale and not (root / "data" / "general").exists()


@pytest.mark.parametrize("has_eval", [False, True])
def test_without_a_recommendation_nothing_changes_and_the_message_says_why(tmp_path, has_eval):
    root = _project(tmp_path, {"data": {"source": "support.csv"}})
    if has_eval:
        _eval(root, None)
    before = (root / "forge.yaml").read_text()
    result = runner.invoke(app, ["plan", "--apply-replay", "-C", str(root)])
    assert result.exit_code == 1
    assert ("No forgetting" in result.output) if has_eval else ("forge eval" in result.output)
    assert (root / "forge.yaml").read_text() == before
