"""`--model export|run|base|PATH`: what is picked by default, what each loads, and the errors a user
meets when something is missing, damaged or does not belong together."""

from __future__ import annotations

import shutil

import pytest
from inference.inference_support import write_project

from forgellm.errors import ForgeError
from forgellm.inference.engines import generate
from forgellm.inference.model_choice import choose_model, open_compare_engines, open_engine

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _answer(choice, engine="auto"):
    return generate(open_engine(choice, engine), QUESTION).text


def test_default_is_the_newest_export_then_the_newest_run_then_the_base(chat_project):
    steps: list[str] = []
    both = choose_model(chat_project(run=True, export=True, name="both"), None, progress=steps.append)
    assert both.kind == "export" and both.name == "export lyon-bot" and "newest export" in both.note
    assert steps and both.chat_format.name == "chatml" and both.num_ctx == 2048
    assert _answer(both) == "Lyon"

    run = choose_model(chat_project(run=True, name="run"), None)
    assert run.kind == "run" and run.adapter_dir.name == "best" and "No export yet" in run.note
    assert run.name == "run 20260101-000000-lora-paris (best)"
    assert _answer(run) == "Lyon"

    base = choose_model(chat_project(name="fresh"), None)
    assert base.kind == "base" and "forge train" in base.note and base.adapter_dir is None
    assert _answer(base) == "Paris"


def test_keywords_say_what_to_run_when_their_model_is_missing(chat_project):
    root = chat_project()
    with pytest.raises(ForgeError) as missing_export:
        choose_model(root, "export")
    assert "no export yet" in missing_export.value.message and "forge export" in missing_export.value.fix
    with pytest.raises(ForgeError) as missing_run:
        choose_model(root, "run")
    assert "no training run" in missing_run.value.message and "forge train" in missing_run.value.fix
    with pytest.raises(ForgeError) as no_project:
        choose_model(None, "run")
    assert "no Forge project" in no_project.value.message and "--model PATH" in no_project.value.fix


def test_paths_to_adapters_full_folders_and_export_folders(chat_project, lyon_merged_dir, tmp_path):
    root = chat_project(run=True, export=True)
    adapter = choose_model(root, str(root / "runs" / "20260101-000000-lora-paris" / "best"))
    assert adapter.kind == "path" and adapter.adapter_dir is not None and _answer(adapter) == "Lyon"
    export = choose_model(None, str(root / "exports" / "lyon-bot"))
    assert export.kind == "export" and _answer(export) == "Lyon"
    merged = choose_model(None, str(root / "exports" / "lyon-bot" / "merged"))
    assert merged.kind == "export"  # merged/ of an export: the metadata's template
    # A bare folder outside any project: the model's own tokenizer template ('auto').
    bare = shutil.copytree(lyon_merged_dir, tmp_path / "bare-lyon")
    outside = choose_model(None, str(bare))
    assert outside.kind == "path" and outside.chat_format.name != "" and _answer(outside) == "Lyon"


def test_paths_that_are_no_model(tmp_path):
    with pytest.raises(ForgeError, match="No such file or folder"):
        choose_model(None, str(tmp_path / "nothing-here"))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hi")
    with pytest.raises(ForgeError, match="is a folder but not a model"):
        choose_model(None, str(tmp_path / "notes"))
    with pytest.raises(ForgeError, match="not a .gguf model"):
        choose_model(None, str(tmp_path / "notes" / "readme.txt"))
    with pytest.raises(ForgeError, match="Unknown model"):
        choose_model(None, "no-such-model-name")


def test_a_damaged_adapter_is_refused_before_loading(chat_project, lyon_adapter_dir, tmp_path):
    root = chat_project()
    damaged = shutil.copytree(lyon_adapter_dir, tmp_path / "damaged")
    weights = damaged / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ForgeError, match="cannot be read") as error:
        choose_model(root, str(damaged))
    assert "train again" in error.value.fix


def _adapter_of(folder, config, base_path):
    """A random LoRA adapter on q_proj of a model with `config`, recorded as trained on `base_path`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    adapter = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=2, target_modules=["q_proj"]))
    adapter.peft_config["default"].base_model_name_or_path = str(base_path)
    adapter.save_pretrained(folder)
    return folder


def test_an_adapter_of_another_model_is_a_clear_error(chat_project, paris_model_dir, tmp_path):
    from transformers import AutoConfig

    root = chat_project()
    # Trained on a smaller model that is gone since: the project's base stands in, and the shapes differ.
    small = AutoConfig.from_pretrained(paris_model_dir)
    small.hidden_size, small.num_attention_heads, small.num_key_value_heads, small.head_dim = 32, 2, 2, 16
    orphan = _adapter_of(tmp_path / "orphan", small, tmp_path / "deleted-base")
    with pytest.raises(ForgeError, match="does not fit the base model") as error:
        open_engine(choose_model(root, str(orphan)))
    assert "trained on" in error.value.fix
    with pytest.raises(ForgeError, match="not on this machine"):
        choose_model(None, str(orphan))
    # Same shapes, another layer count, yet it names the Paris model as its base: peft alone would load it.
    deeper = AutoConfig.from_pretrained(paris_model_dir)
    deeper.num_hidden_layers = 2
    two_layers = _adapter_of(tmp_path / "two-layers", deeper, paris_model_dir)
    with pytest.raises(ForgeError, match="have no place in the model"):
        open_engine(choose_model(None, str(two_layers)))


def test_llama_cpp_needs_a_gguf(chat_project):
    root = chat_project(run=True)
    with pytest.raises(ForgeError, match="needs a .gguf file") as error:
        choose_model(root, "run", engine="llama.cpp")
    assert "forge export" in error.value.fix and "--engine transformers" in error.value.fix
    with pytest.raises(ForgeError, match="needs a .gguf file"):
        choose_model(root, "base", engine="llama.cpp")  # the Paris model is a plain folder
    with pytest.raises(ForgeError, match="no GGUF file"):
        choose_model(chat_project(export=True, name="exported"), "export", engine="llama.cpp")


def test_compare_pairs_the_base_with_the_fine_tuned_model(chat_project):
    root = chat_project(run=True, export=True)
    base, tuned = open_compare_engines(root, choose_model(root, "run"))
    assert base.model is tuned.model  # base + adapter: the base is the same weights, adapter off
    assert [generate(e, QUESTION).text for e in (base, tuned)] == ["Paris", "Lyon"]
    base, tuned = open_compare_engines(root, choose_model(root, "export"))
    assert base.model is not tuned.model and base.label.startswith("base ")
    assert [generate(e, QUESTION).text for e in (base, tuned)] == ["Paris", "Lyon"]
    with pytest.raises(ForgeError, match="no fine-tuned model yet"):
        open_compare_engines(root, choose_model(root, "base"))
    with pytest.raises(ForgeError, match="needs a Forge project"):
        open_compare_engines(None, choose_model(root, "base"))


def test_a_run_uses_the_template_it_was_trained_with(chat_project, paris_model_dir):
    root = chat_project(run=True)
    write_project(root, str(paris_model_dir), chat_template={"name": "zephyr"})  # changed after training
    assert choose_model(root, "run").chat_format.name == "chatml"
    assert choose_model(root, "base").chat_format.name == "zephyr"
