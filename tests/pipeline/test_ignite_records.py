"""Stages hand records, not folders: one ignite reads forge.yaml once, loads the base model's tokenizer once
for prepare, eval and export, and train trains on the PreparedData it is handed without searching for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stage_support import staged
from typer.testing import CliRunner

from forgellm.cli.main import app

runner = CliRunner()
GOAL = "Make a customer support bot"


def _count_reads(monkeypatch, config_file: Path) -> list[str]:
    """Every read of `config_file` in this process (load_config reads it with Path.read_text)."""
    reads: list[str] = []
    original = Path.read_text

    def read_text(self: Path, *args, **kwargs):
        if self.resolve() == config_file.resolve():
            reads.append(str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    return reads


def _count_tokenizer_loads(monkeypatch) -> list[str]:
    """The folders AutoTokenizer.from_pretrained loads in this process, from an empty cache."""
    from transformers import AutoTokenizer

    from forgellm.models.loading import clear_caches

    clear_caches()
    loads: list[str] = []
    original = AutoTokenizer.from_pretrained.__func__

    def from_pretrained(cls, name, *args, **kwargs):
        loads.append(str(Path(name).resolve()))
        return original(cls, name, *args, **kwargs)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", classmethod(from_pretrained))
    return loads


def _no_search(monkeypatch) -> None:
    from forgellm.training import runs

    def find_prepared(*_args, **_kwargs):
        raise AssertionError("train searched for prepared data instead of taking the record it was handed")

    monkeypatch.setattr(runs, "find_prepared", find_prepared)


def test_ignite_reads_forge_yaml_once_and_loads_the_tokenizer_once(
    tmp_path, tiny_causal_lm_dir, _support_csv, monkeypatch
):
    """The design: init reads an existing forge.yaml (the one read; on a fresh folder init writes it and it is
    read 0 times); plan returns what it wrote and prepare what it detected, and both are carried on; a re-run
    whose stages are all reused reads it once and loads the other records with their readers."""
    monkeypatch.setenv("FORGE_TRAINING__SAVE_EVERY_STEPS", "2")
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")
    project = tmp_path / "bot"
    made = runner.invoke(app, ["init", str(project), "--model", str(tiny_causal_lm_dir)])
    assert made.exit_code == 0, made.output[-3000:]
    reads = _count_reads(monkeypatch, project / "forge.yaml")
    loads = _count_tokenizer_loads(monkeypatch)
    _no_search(monkeypatch)
    args = ["ignite", str(_support_csv), GOAL, "--model", str(tiny_causal_lm_dir), "--max-steps", "2", "--yes",
            "-C", str(project)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output[-4000:]
    assert len(reads) == 1, reads
    assert loads.count(str(tiny_causal_lm_dir.resolve())) == 1, loads  # study, prepare, eval, export share it
    assert json.loads((project / "exports" / "bot" / "metadata.json").read_text())["run_id"]

    reads.clear()
    again = runner.invoke(app, [*args, "--json"])
    assert again.exit_code == 0, again.output[-3000:]
    assert [s["status"] for s in json.loads(again.stdout)["stages"]] == ["reused"] * 7
    assert len(reads) == 1, reads


def test_train_uses_the_prepared_data_it_is_handed(tiny_train_project, monkeypatch):
    from forgellm.project.prepared import PreparedData
    from forgellm.project.run_record import RunSpec
    from forgellm.training.supervisor import run_training

    root, prepared_dir = tiny_train_project(max_steps=2, eval_every_steps=2, save_every_steps=2)
    prepared = PreparedData.load(prepared_dir)
    assert prepared is not None
    _no_search(monkeypatch)
    result = run_training(*staged(root), prepared=prepared)
    assert result.status == "completed"
    assert Path(RunSpec.load(result.run_dir).prepared_dir) == prepared.folder
    assert result.record.run_id == result.run_id and result.record.best is not None


def test_handed_data_prepared_for_other_settings_is_refused(tiny_train_project, monkeypatch):
    """A record handed on is checked like data found on disk: forge.yaml edited between two ignite runs
    must not train on examples prepared for the old settings."""
    from forgellm.errors import ErrorCode, ForgeError
    from forgellm.project.prepared import PreparedData
    from forgellm.training.supervisor import run_training

    root, prepared_dir = tiny_train_project(max_steps=2, eval_every_steps=2, save_every_steps=2)
    prepared = PreparedData.load(prepared_dir)
    layout, config = staged(root)
    edited = config.model_copy(deep=True)
    edited.data.recipe.system_prompt = "You answer in rhymes."  # changes what prepare renders
    _no_search(monkeypatch)
    with pytest.raises(ForgeError) as caught:
        run_training(layout, edited, prepared=prepared)
    assert caught.value.code == ErrorCode.PREPARED_DATA_STALE
    assert not any(layout.runs_dir.glob("*/run.json"))  # refused before a run folder was made


def test_shared_chat_setups_keep_their_own_warnings(tiny_causal_lm_dir):
    from forgellm.config.schema import ChatTemplateSection
    from forgellm.models.loading import chat_setup, clear_caches

    clear_caches()
    first = chat_setup(str(tiny_causal_lm_dir), ChatTemplateSection(name="chatml"))
    first.warnings.append("a caller's own note")
    second = chat_setup(str(tiny_causal_lm_dir), ChatTemplateSection(name="chatml"))
    assert second.tokenizer is first.tokenizer and second.chat_format is first.chat_format
    assert "a caller's own note" not in second.warnings


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Other tests must not get this module's counting tokenizers from the shared cache."""
    yield
    from forgellm.models.loading import clear_caches

    clear_caches()
