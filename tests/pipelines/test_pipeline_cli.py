"""`forge pipeline cpt-ift` and `forge ignite DOCS --conversations` as commands: bad documents stop with the
message and nothing created; ignite offers the pipeline when its data is a folder of documents."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from forgellm.cli.main import app

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
runner = CliRunner()


@pytest.mark.parametrize("command", ["pipeline", "ignite"])
def test_an_empty_documents_folder_stops_both_commands_before_anything_is_made(tmp_path, command):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "scan.pdf").write_bytes(b"%PDF-1.4\x00\x01" * 50)
    project = tmp_path / "bot"
    args = (
        ["pipeline", "cpt-ift", str(docs), str(SHARED / "chat_transcripts_ja"), "Answer", "-C", str(project)]
        if command == "pipeline"
        else ["ignite", str(docs), "Answer", "--conversations", str(SHARED / "chat_transcripts_ja"), "-C", str(project)]
    )
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "docs-empty" in result.output and "no text document" in result.output and "binary" in result.output
    assert "Traceback" not in result.output and not project.exists()


def test_ignite_on_a_folder_of_documents_offers_the_two_stage_pipeline(tmp_path, tiny_causal_lm_dir):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "guide.md").write_text("# Guide\n\nThe client sends requests.\n" * 20, encoding="utf-8")
    result = runner.invoke(
        app, ["ignite", str(docs), "Answer questions", "--dry-run", "--model", str(tiny_causal_lm_dir),
              "-C", str(tmp_path / "bot")], env={"COLUMNS": "300"},
    )  # fmt: skip
    assert "a folder of 1 documents" in result.output and "--conversations FILE" in result.output, result.output
