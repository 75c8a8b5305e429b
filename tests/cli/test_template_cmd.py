from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from forgellm.cli.main import app
from forgellm.errors import ForgeError
from forgellm.templates.preview import read_conversation

runner = CliRunner()


@pytest.mark.slow
def test_template_json_for_bundled_model(bundled_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["template", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["template"] == "tokenizer"  # the tokenizer's own template wins under 'auto'
    assert data["text"].startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    trained = "".join(data["text"][a:b] for a, b in data["trained_spans"])
    assert trained.endswith("check it.<|im_end|>") and "My order" not in trained
    assert data["generation_prompt"].endswith("<|im_start|>assistant\n")
    assert len(data["input_ids"]) == data["tokens"] and 0 < data["trained_tokens"] < data["tokens"]
    assert any("pad == eos" in w for w in data["warnings"])


@pytest.mark.slow
def test_template_uses_forge_yaml_and_messages_file(bundled_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner.invoke(app, ["init", "."], catch_exceptions=False)
    config = (tmp_path / "forge.yaml").read_text().replace("name: auto", "name: chatml", 1)
    (tmp_path / "forge.yaml").write_text(config)
    rows = tmp_path / "chats.jsonl"
    rows.write_text(
        json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
        + "\n"
        + json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "Be terse."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello."},
                ]
            }
        )
        + "\n"
    )
    result = runner.invoke(app, ["template", "--messages", str(rows), "--row", "2", "--json"])
    data = json.loads(result.output)
    assert data["template"] == "chatml"
    assert data["text"] == (
        "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n"
    )
    human = runner.invoke(app, ["template", "--messages", str(rows)])
    assert "green = trained" in human.output and "Tokens:" in human.output


@pytest.mark.slow
def test_incompatible_template_is_refused(bundled_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["template", "--template", "llama3"])
    assert result.exit_code == 1
    assert "does not fit" in result.output and "<|eot_id|>" in result.output and "Traceback" not in result.output


def test_read_conversation_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n{not json}\n')
    with pytest.raises(ForgeError, match="row 2 is not valid JSON"):
        read_conversation(bad, 2)
    with pytest.raises(ForgeError, match="no row 3"):
        read_conversation(bad, 3)
    other = tmp_path / "x.json"
    other.write_text('{"prompt": "hi"}')
    with pytest.raises(ForgeError, match="no `messages` list"):
        read_conversation(other)
