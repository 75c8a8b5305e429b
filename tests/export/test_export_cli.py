"""`forge export` as a user runs it, after a real `forge train` of the tiny model."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from forgellm.cli.main import app
from forgellm.errors import ForgeError

runner = CliRunner()


def test_train_then_export_shows_files_and_the_ollama_command(tiny_train_project, monkeypatch):
    from forgellm.training.runs import list_runs

    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")  # nothing listens there: registration is skipped
    root, _ = tiny_train_project(max_steps=2, save_every_steps=2, eval_every_steps=2)
    trained = runner.invoke(app, ["train", "-C", str(root), "--json"])
    assert trained.exit_code == 0, trained.output[-3000:]
    (run_dir,) = list_runs(root)

    result = runner.invoke(app, ["export", "-C", str(root), "--quant", "f16", "--name", "support-bot"])
    assert result.exit_code == 0, result.output[-3000:]
    out = result.output
    assert f"Exported run {run_dir.name} (best) to exports/support-bot/" in out
    for needle in ("Merged weights", "GGUF F16", "exports/support-bot/support-bot-f16.gguf", "Modelfile", "README.md"):
        assert needle in out, needle
    assert "no Ollama server answers at http://127.0.0.1:9" in out
    assert "ollama create support-bot -f exports/support-bot/Modelfile" in out
    meta = json.loads((root / "exports" / "support-bot" / "metadata.json").read_text())
    assert meta["run_id"] == run_dir.name and meta["performance"]["status"] == "completed"
    assert meta["ollama"]["reachable"] is False and meta["ollama"]["registered"] is False

    again = runner.invoke(app, ["export", "-C", str(root), "--quant", "f16", "--name", "support-bot", "--json"])
    assert again.exit_code == 0, again.output[-3000:]
    assert json.loads(again.stdout)["replaced"] is True


def test_export_outside_a_project_and_before_training_are_clear(tmp_path, tiny_train_project):
    outside = runner.invoke(app, ["export", "-C", str(tmp_path)])
    assert outside.exit_code == 1 and "No Forge project" in outside.output
    root, _ = tiny_train_project()
    untrained = runner.invoke(app, ["export", "-C", str(root)])
    assert untrained.exit_code == 1
    assert "nothing to export yet" in untrained.output and "forge train" in untrained.output


def test_push_to_hub_offline_or_without_a_token_says_what_to_do(tmp_path):
    from forgellm.export.hub import push_export

    with pytest.raises(ForgeError) as offline:
        push_export(tmp_path, "alice/bot", environ={"HF_HUB_OFFLINE": "1", "HF_TOKEN": "x"})
    assert "HF_HUB_OFFLINE" in offline.value.message and "complete" in offline.value.fix
    with pytest.raises(ForgeError) as no_token:
        push_export(tmp_path, "alice/bot", environ={})
    assert "HF_TOKEN" in no_token.value.message
    with pytest.raises(ForgeError) as bad_repo:
        push_export(tmp_path, "not a repo", environ={"HF_TOKEN": "x"})
    assert "OWNER/NAME" in bad_repo.value.fix


def test_push_to_hub_unreachable_endpoint_is_a_clear_error(tmp_path):
    import socket

    from forgellm.export.hub import push_export

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "README.md").write_text("card")
    with pytest.raises(ForgeError) as caught:
        push_export(tmp_path, "alice/bot", environ={"HF_TOKEN": "hf_x", "HF_ENDPOINT": f"http://127.0.0.1:{port}"})
    assert "Cannot reach the Hugging Face Hub" in caught.value.message or "refused" in caught.value.message
    assert "complete locally" in caught.value.fix


def test_export_registers_with_a_running_ollama_and_records_it(exportable_project, monkeypatch):
    from export.ollama_server import CANNED_ANSWER, ollama_server

    root, _ = exportable_project
    with ollama_server() as server:
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        result = runner.invoke(app, ["export", "-C", str(root), "--quant", "q8_0"])
    assert result.exit_code == 0, result.output[-3000:]
    folder = root / "exports" / "my-model"
    gguf = (folder / "my-model-q8_0.gguf").read_bytes()
    assert list(server.blobs.values()) == [gguf]
    (create,) = server.requests_to("POST", "/api/create")
    modelfile = (folder / "Modelfile").read_text()
    assert create.json["model"] == "my-model" and create.json["template"] in modelfile
    assert create.json["parameters"]["stop"] == ["<|im_end|>"]
    assert "Ollama: created my-model" in result.output and "ollama run my-model" in result.output
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["ollama"]["registered"] is True and meta["ollama"]["smoke_answer"] == CANNED_ANSWER


def test_ollama_refusing_the_create_shows_its_message_and_keeps_the_files(exportable_project, monkeypatch):
    from export.ollama_server import ollama_server

    root, _ = exportable_project
    with ollama_server(refuse_create="invalid model name") as server:
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        result = runner.invoke(app, ["export", "-C", str(root), "--quant", "f16"])
    assert result.exit_code == 1
    assert "invalid model name" in result.output and "The export is complete" in result.output
    folder = root / "exports" / "my-model"
    assert (folder / "my-model-f16.gguf").is_file() and (folder / "Modelfile").is_file()
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["ollama"]["registered"] is False and "invalid model name" in meta["ollama"]["error"]
