"""`forge export` ships the chat template the run's data was rendered with (recorded in the prepared
data's manifest.json), never one edited since, or refuses."""

from __future__ import annotations

import json

import pytest
from export.export_support import make_finished_run
from stage_support import staged
from tiny_project_support import CHATML

from forgellm.errors import ForgeError
from forgellm.export.pipeline import export_model

EDITED = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}<|im_end|>\n{% endfor %}" + (
    "{% if add_generation_prompt %}### assistant: {% endif %}"
)


def _export(root, **kwargs):
    return export_model(*staged(root), ollama=False, environ={}, quants=["f16"], **kwargs)


@pytest.fixture
def custom_template_run(tiny_train_project, tiny_causal_lm_dir, tmp_path):
    """-> (root, run dir, .jinja path): trained on data prepared with a custom ChatML .jinja file."""
    jinja = tmp_path / "chat.jinja"
    jinja.write_text(CHATML)
    root, prepared = tiny_train_project(model={"chat_template": {"name": "custom", "jinja": str(jinja)}})
    return root, make_finished_run(root, prepared, tiny_causal_lm_dir), jinja


def _shipped_template(result) -> str:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(result.folder / "merged")).chat_template


def test_a_template_edited_after_training_is_not_shipped(custom_template_run):
    root, _, jinja = custom_template_run
    jinja.write_text(EDITED)
    result = _export(root)
    assert _shipped_template(result) == CHATML  # what training used, not the file as it is now
    modelfile = result.modelfile.read_text()
    assert "<|im_start|>" in modelfile and "###" not in modelfile
    assert any("changed since the training data was prepared" in w for w in result.warnings)


def test_a_deleted_template_file_exports_from_the_record(custom_template_run):
    root, _, jinja = custom_template_run
    jinja.unlink()
    assert _shipped_template(_export(root)) == CHATML


def test_a_builtin_template_that_renders_differently_now_is_refused(tiny_train_project, tiny_causal_lm_dir):
    root, prepared = tiny_train_project()  # chatml, a builtin family
    make_finished_run(root, prepared, tiny_causal_lm_dir)
    manifest = json.loads((prepared / "manifest.json").read_text())
    # As if an older Forge had rendered chatml another way: the record no longer matches today's text.
    manifest["chat_template"].update(text=EDITED, sha256="0" * 64)
    (prepared / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ForgeError) as caught:
        _export(root)
    assert "renders differently" in caught.value.message
    assert not (root / "exports" / "my-model").exists()
