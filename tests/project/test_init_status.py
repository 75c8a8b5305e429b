from __future__ import annotations

import json
import stat

import pytest

from forgellm.config.io import load_config
from forgellm.config.settings import credentials_path
from forgellm.errors import ForgeError
from forgellm.project import PROJECT_DIRS, advisor_settings, find_project, init_project, require_project
from forgellm.status import project_status


def test_init_creates_layout_and_valid_config(tmp_path):
    root = tmp_path / "my-bot"
    result = init_project(root, advisor=advisor_settings("gemini"))
    for sub in PROJECT_DIRS:
        assert (root / sub).is_dir()
    assert set(result.created) >= {"forge.yaml", ".gitignore", "runs/", "exports/"}
    assert result.existed == []
    config = load_config(root).config
    assert config.project.name == "my-bot"
    assert config.model.ref == "smollm2-135m"
    assert (config.advisor.provider, config.advisor.model) == ("gemini", "gemini-2.5-flash")
    assert "runs/" in (root / ".gitignore").read_text()


def test_init_is_idempotent_and_never_overwrites(tmp_path):
    init_project(tmp_path, name="first")
    (tmp_path / "forge.yaml").write_text((tmp_path / "forge.yaml").read_text() + "# my note\n")
    before = (tmp_path / "forge.yaml").read_text()
    gitignore = tmp_path / ".gitignore"
    gitignore.write_text("*.log\n")
    again = init_project(tmp_path, name="second", advisor=advisor_settings("openai"))
    assert again.created == []
    assert "forge.yaml" in again.existed and ".gitignore" in again.existed
    assert (tmp_path / "forge.yaml").read_text() == before
    assert gitignore.read_text() == "*.log\n"
    assert any("advisor settings given were not applied" in w for w in again.warnings)
    assert any("consider adding" in w for w in again.warnings)


def test_init_into_folder_with_foreign_forge_yaml(tmp_path):
    foreign = "# someone else's tool\nforge_version: 3\nsteps: [melt, cast]\n"
    (tmp_path / "forge.yaml").write_text(foreign)
    (tmp_path / "notes.txt").write_text("mine")
    result = init_project(tmp_path)
    assert (tmp_path / "forge.yaml").read_text() == foreign
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert any("not a valid Forge plan" in w and "left untouched" in w for w in result.warnings)


def test_api_key_goes_to_user_credentials_not_project(tmp_path):
    result = init_project(tmp_path / "p", advisor=advisor_settings("openai"), api_key="sk-abc123")
    assert result.credentials_file == credentials_path()
    assert stat.S_IMODE(credentials_path().stat().st_mode) == 0o600
    for path in (tmp_path / "p").rglob("*"):
        if path.is_file():
            assert "sk-abc123" not in path.read_text(errors="replace")


def test_rules_advisor_refuses_key_and_model(tmp_path):
    with pytest.raises(ForgeError):
        init_project(tmp_path, api_key="k")
    with pytest.raises(ForgeError):
        advisor_settings("rules", model="x")


def test_openai_defaults_and_custom_server():
    assert advisor_settings("openai").base_url == "https://api.openai.com/v1"
    local = advisor_settings("openai", "qwen2.5:7b", "http://127.0.0.1:8000/v1")
    assert (local.model, local.base_url) == ("qwen2.5:7b", "http://127.0.0.1:8000/v1")


def test_init_refuses_a_file_path(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ForgeError, match="is a file"):
        init_project(target)


def test_status_outside_a_project(tmp_path):
    report = project_status(tmp_path)
    assert (report["found"], report["project_dir"]) == (False, None)
    assert report["next"]["command"] == "forge init"


def test_status_of_new_project_from_a_subfolder(tmp_path):
    init_project(tmp_path, advisor=advisor_settings("gemini"))
    assert find_project(tmp_path / "runs") == tmp_path.resolve()
    report = project_status(tmp_path / "runs")
    assert report["plan"]["valid"] is True
    assert report["model"]["kind"] == "bundled" and report["model"]["ok"] is True
    assert report["advisor"]["key"] == {"provider": "gemini", "available": False, "source": None}
    assert report["next"]["command"] == "forge login --provider gemini"
    assert report["runs"] == [] and report["exports"] == []
    json.dumps(report)  # JSON-serializable as `forge status --json` prints it


def test_require_project_finds_the_folder_or_says_how_to_create_one(tmp_path):
    with pytest.raises(ForgeError) as refused:
        require_project(tmp_path)
    assert refused.value.message == f"No Forge project (forge.yaml) in {tmp_path.resolve()} or above."
    assert "forge init" in refused.value.fix and "forge ignite" in refused.value.fix
    init_project(tmp_path)
    assert require_project(tmp_path / "runs") == tmp_path.resolve()


def test_status_reads_stage_outputs(tmp_path):
    init_project(tmp_path)
    run = tmp_path / "runs" / "20261122-1200"
    run.mkdir()
    (run / "run.json").write_text('{"run_id": "20261122-1200", "prepared_dir": "/gone"}')
    (run / "summary.json").write_text('{"status": "completed"}')
    (tmp_path / "runs" / "crashed").mkdir()
    report = project_status(tmp_path)
    runs = {entry["id"]: entry for entry in report["runs"]}
    assert (runs["20261122-1200"]["state"], runs["20261122-1200"]["complete"]) == ("completed", True)
    assert (runs["crashed"]["state"], runs["crashed"]["complete"]) == ("damaged", False)
    # Runs exist but no data is prepared: the data comes first.
    assert report["next"]["command"] == 'forge plan "GOAL" --data FILE'


def test_status_of_invalid_config(tmp_path):
    (tmp_path / "forge.yaml").write_text("training:\n  method: nope\n")
    report = project_status(tmp_path)
    assert report["plan"]["valid"] is False
    assert any("training.method" in p for p in report["plan"]["problems"])
