"""`forge study` and `forge prepare` as a user runs them, on the real data sets."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from forgellm.cli.main import app
from forgellm.config.io import load_config, save_config

runner = CliRunner()


def test_show_recipe_detects_and_saves(make_project, shared_data):
    project = make_project()
    result = runner.invoke(
        app, ["prepare", str(shared_data / "alpaca_en_demo.json"), "-C", str(project), "--show-recipe", "--json"]
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["format"] == "alpaca" and shown["recipe"]["columns"]["user"] == "instruction"
    assert load_config(project).config.data.format == "alpaca"


def test_prepare_json_and_human_output(make_project, shared_data):
    project = make_project()
    result = runner.invoke(
        app, ["prepare", str(shared_data / "openai_messages_toy.jsonl"), "-C", str(project), "--json"]
    )
    data = json.loads(result.output)
    assert data["stats"]["rows_read"] == 5 and all(c["ok"] for c in data["checks"])
    human = runner.invoke(app, ["prepare", str(shared_data / "openai_messages_toy.jsonl"), "-C", str(project)])
    assert "Already prepared" in human.output and "train" in human.output


def test_prepare_without_project_is_a_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.jsonl").write_text("{}\n")
    result = runner.invoke(app, ["prepare", "d.jsonl"])
    assert result.exit_code == 1 and "forge init" in result.output and "Traceback" not in result.output


def test_study_writes_reports_and_json(make_project, shared_data):
    project = make_project()
    result = runner.invoke(app, ["study", str(shared_data / "support_tickets.csv"), "-C", str(project), "--json"])
    assert result.exit_code == 0, result.output[-2000:]
    data = json.loads(result.output)
    codes = {f["code"]: f for f in data["report"]["findings"]}
    assert codes["placeholders_single"]["severity"] == "warning" and "pii" in codes
    assert data["report"]["token_counter"].startswith("model:")  # the plan's model counts tokens
    html = (project / "reports" / "study.html").read_text()
    assert "<svg" in html and "http://" not in html and "https://" not in html
    assert json.loads((project / "reports" / "study.json").read_text())["rows"] == 8469


def test_study_samples_big_files_and_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = "".join(json.dumps({"prompt": f"question {i}", "completion": f"answer {i}"}) + "\n" for i in range(3000))
    (tmp_path / "big.jsonl").write_text(rows)
    result = runner.invoke(app, ["study", "big.jsonl", "--sample-rows", "500", "--json"])
    report = json.loads(result.output)["report"]
    assert report["rows"] <= 600 and "--full" in report["sample_note"]
    assert report["token_counter"] == "local:smollm2-135m"  # no plan here: the bundled tokenizer (token_stats)
    full = json.loads(runner.invoke(app, ["study", "big.jsonl", "--full", "--json"]).output)["report"]
    assert full["rows"] == 3000 and full["sample_note"] is None


REAL = [
    ("bitext_customer_support.csv", "qa", {}),
    ("alpaca_en_demo.json", "alpaca", {}),
    ("sharegpt_glaive_toolcall.json", "sharegpt", {}),
    ("openai_messages_toy.jsonl", "messages", {}),
    (
        "support_tickets.csv",
        "qa",
        {"method": "stratified", "column": "Ticket Type", "train": 0.8, "val": 0.1, "test": 0.1},
    ),
    ("httpx_docs", "text", {}),
    ("chat_transcripts_ja", "transcript", {}),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "expected_format", "split"), REAL, ids=[r[0] for r in REAL])
def test_real_data_sets_prepare_with_the_bundled_model(
    bundled_model_dir, shared_data, tmp_path, name, expected_format, split
):
    from forgellm.config.schema import ForgeConfig

    config = ForgeConfig()
    if split:
        config.preprocessing.split = config.preprocessing.split.model_validate(split)
    save_config(config, tmp_path / "forge.yaml")
    result = runner.invoke(app, ["prepare", str(shared_data / name), "-C", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output[-3000:]
    data = json.loads(result.output)
    assert data["stats"]["format"] == expected_format
    assert all(check["ok"] for check in data["checks"]), data["checks"]
    splits = data["stats"]["splits"]
    assert splits["train"]["examples"] > 0 and splits["train"]["trained_tokens"] > 0
    if split:  # stratified by Ticket Type: every type in every split, in proportion
        out = tmp_path / "data" / "prepared" / data["output_dir"].rsplit("/", 1)[1]
        counts = {}
        for part in ("train", "val", "test"):
            for line in (out / f"{part}.jsonl").read_text().splitlines():
                label = json.loads(line)["label"]
                counts.setdefault(label, {}).setdefault(part, 0)
                counts[label][part] += 1
        assert len(counts) == 5
        for per_split in counts.values():
            total = sum(per_split.values())
            assert abs(per_split["train"] / total - 0.8) < 0.02
