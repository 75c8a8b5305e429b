"""The prepared data records the exact chat template it was rendered with; a custom .jinja file edited
after `forge prepare` makes that data stale (by content, not path): prepare re-prepares, train refuses."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from stage_support import staged
from tiny_project_support import CHATML

from forgellm.errors import ForgeError
from forgellm.training.runs import list_runs
from forgellm.training.supervisor import run_training

# The same conversation format with a blank line between turns: not ChatML any more.
EDITED = CHATML.replace("<|im_end|>\n{% endfor %}", "<|im_end|>\n\n{% endfor %}")


def test_prepare_records_the_template_text_its_hash_the_tokenizer_and_max_length(tiny_train_project, tmp_path):
    jinja = tmp_path / "chat.jinja"
    jinja.write_text(CHATML)
    root, prepared = tiny_train_project(model={"chat_template": {"name": "custom", "jinja": str(jinja)}})
    manifest = json.loads((prepared / "manifest.json").read_text())
    stats = json.loads((prepared / "stats.json").read_text())
    assert manifest["chat_template"]["text"] == CHATML
    assert manifest["chat_template"]["sha256"] == hashlib.sha256(CHATML.encode()).hexdigest()
    assert stats["template_sha256"] == manifest["chat_template"]["sha256"]
    assert manifest["max_length"] == stats["max_length"] == 256
    assert stats["tokenizer"] == manifest["tokenizer"] and manifest["tokenizer"]


def test_a_builtin_template_is_recorded_as_the_jinja_export_writes(tiny_train_project):
    from forgellm.config.io import load_config
    from forgellm.models.loading import chat_setup
    from forgellm.templates import to_hf_jinja

    root, prepared = tiny_train_project()  # chatml, a builtin family
    recorded = json.loads((prepared / "manifest.json").read_text())["chat_template"]
    model = load_config(root).config.model
    setup = chat_setup(model.ref, model.chat_template)
    assert recorded["name"] == "chatml" and recorded["text"] == to_hf_jinja(setup.chat_format) != ""


def test_an_edited_custom_template_makes_the_data_stale(tiny_train_project, tmp_path):
    from forgellm.data.prepare.run import prepare_dataset

    jinja = tmp_path / "chat.jinja"
    jinja.write_text(CHATML)
    root, prepared = tiny_train_project(model={"chat_template": {"name": "custom", "jinja": str(jinja)}})
    data = Path(json.loads((prepared / "manifest.json").read_text())["input"]["path"])
    jinja.write_text(EDITED)  # same path, other content

    with pytest.raises(ForgeError) as caught:
        run_training(*staged(root))
    assert "chat template changed" in caught.value.message and "forge prepare" in caught.value.fix
    assert list_runs(root) == []

    again = prepare_dataset(*staged(root), data)
    assert not again.already_prepared and again.output_dir != prepared  # a new fingerprint: prepared anew
    assert json.loads((again.output_dir / "manifest.json").read_text())["chat_template"]["text"] == EDITED


def test_the_fingerprint_follows_the_template_content_not_its_path(tmp_path):
    from forgellm.config.schema import ForgeConfig
    from forgellm.data.prepare.manifest import settings_fingerprint

    jinja = tmp_path / "chat.jinja"
    jinja.write_text(CHATML)
    config = ForgeConfig.model_validate({"model": {"chat_template": {"name": "custom", "jinja": "chat.jinja"}}})
    before = settings_fingerprint(config, "tok:1", base_dir=tmp_path)
    assert settings_fingerprint(config, "tok:1", base_dir=tmp_path) == before
    jinja.write_text(EDITED)
    assert settings_fingerprint(config, "tok:1", base_dir=tmp_path) != before
