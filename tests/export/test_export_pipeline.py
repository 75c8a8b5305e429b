"""`forge export` end to end on the tiny model: what lands in exports/<name>/, and every refusal."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
from stage_support import staged

from forgellm.errors import ForgeError
from forgellm.export.pipeline import export_model

MESSAGES = [
    {"role": "user", "content": "Where is my order?"},
    {"role": "assistant", "content": "It ships today."},
    {"role": "user", "content": "Thanks!"},
]


def _export(root, **kwargs):
    kwargs.setdefault("ollama", False)
    kwargs.setdefault("environ", {})
    return export_model(*staged(root), **kwargs)


def _no_leftovers(root) -> list[str]:
    exports = root / "exports"
    return [p.name for p in exports.iterdir() if p.name.startswith(".")] if exports.is_dir() else []


def test_export_writes_every_artifact_and_the_merged_model_equals_base_plus_adapter(exportable_project):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forgellm.templates import build_chat_format

    root, run_dir = exportable_project
    result = _export(root, quants=["f16", "q8_0"])

    folder = root / "exports" / "my-model"
    assert result.folder == folder
    names = {p.name for p in folder.iterdir()}
    assert {"merged", "my-model-f16.gguf", "my-model-q8_0.gguf", "Modelfile", "README.md", "metadata.json"} <= names
    assert _no_leftovers(root) == []

    # Plain transformers loads the merged folder, and it computes what base + adapter computed.
    merged = AutoModelForCausalLM.from_pretrained(str(folder / "merged")).eval()
    spec = json.loads((run_dir / "run.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    reference = PeftModel.from_pretrained(base, str(run_dir / "best")).eval()
    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 64]])
    with torch.no_grad():
        expected, got = reference(ids).logits, merged(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(spec["model_dir"])(ids).logits
    assert torch.allclose(expected, got, atol=1e-5)
    assert not torch.allclose(plain, got, atol=1e-3), "the adapter changed nothing: the merge was not tested"

    # The tokenizer carries the training chat template; the generation config stops at the end of a turn.
    tokenizer = AutoTokenizer.from_pretrained(str(folder / "merged"))
    training_format = build_chat_format("chatml", tokenizer)
    assert tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True) == (
        training_format.render_text(MESSAGES, add_generation_prompt=True)
    )
    generation = json.loads((folder / "merged" / "generation_config.json").read_text())
    eos = generation["eos_token_id"]
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in (eos if isinstance(eos, list) else [eos])


def test_metadata_and_model_card_carry_the_briefs_fields(exportable_project):
    root, run_dir = exportable_project
    result = _export(root, quants=["f16"])
    meta = json.loads(result.metadata.read_text())
    for key in ("name", "base_model", "training_type", "checkpoint", "config", "performance", "published_at"):
        assert meta[key] not in (None, "", {}), key
    assert meta["training_type"] == "lora" and meta["checkpoint"] == "best" and meta["run_id"] == run_dir.name
    assert meta["performance"]["best_val_loss"] == 2.5
    assert meta["files"]["gguf"] == {"f16": "my-model-f16.gguf"}
    assert meta["stop"] and "<|im_end|>" in meta["stop"]
    assert meta["ollama"]["command"] == "ollama create my-model -f exports/my-model/Modelfile"
    card = result.card.read_text()
    for needle in (
        "## Training data",
        "## Method and hyper-parameters",
        "## Results",
        "AutoModelForCausalLM",
        "llama-cli -m my-model-f16.gguf",
        "ollama create my-model",
        "## Licence",
        "2.5000",
    ):
        assert needle in card, needle
    modelfile = result.modelfile.read_text()
    assert modelfile.startswith("FROM ./my-model-f16.gguf") or "FROM ./my-model-f16.gguf" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile


def test_modelfile_uses_q8_0_by_default_and_the_first_quant_the_user_named(exportable_project):
    root, _ = exportable_project
    default = _export(root)  # forge.yaml default: f16 + q8_0
    assert set(default.gguf_files) == {"f16", "q8_0"}
    assert "FROM ./my-model-q8_0.gguf" in default.modelfile.read_text()
    chosen = _export(root, quants=["f16", "q8_0"], name="second")
    assert "FROM ./second-f16.gguf" in chosen.modelfile.read_text()


def test_export_before_any_training_says_what_to_run(tiny_train_project):
    root, _ = tiny_train_project()
    with pytest.raises(ForgeError) as caught:
        _export(root)
    assert "no training run" in caught.value.message and "forge train" in caught.value.fix


def test_corrupt_adapter_is_refused_before_loading_a_model(exportable_project):
    root, run_dir = exportable_project
    weights = run_dir / "best" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ForgeError) as caught:
        _export(root)
    assert "cannot be read" in caught.value.message and "damaged" in caught.value.fix
    assert _no_leftovers(root) == [] and not (root / "exports" / "my-model").exists()


def test_adapter_of_another_model_is_refused_clearly(exportable_project, tmp_path):
    import torch
    from export.export_support import write_adapter
    from transformers import LlamaConfig, LlamaForCausalLM

    from forgellm.export.source import ADAPTER_CONFIG

    root, run_dir = exportable_project
    model_dir = json.loads((run_dir / "run.json").read_text())["model_dir"]
    tiny = json.loads((Path(model_dir) / "config.json").read_text())
    other_dir = tmp_path / "wider-model"
    config = LlamaConfig(
        vocab_size=tiny["vocab_size"],
        hidden_size=96,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        tie_word_embeddings=True,
    )
    torch.manual_seed(1)
    LlamaForCausalLM(config).save_pretrained(other_dir)
    shutil.copy(run_dir / "best" / "tokenizer.json", other_dir / "tokenizer.json")
    shutil.copy(run_dir / "best" / "tokenizer_config.json", other_dir / "tokenizer_config.json")
    shutil.rmtree(run_dir / "best")
    write_adapter(other_dir, run_dir / "best")
    assert (run_dir / "best" / ADAPTER_CONFIG).is_file()
    with pytest.raises(ForgeError) as caught:
        _export(root, quants=["f16"])
    assert "does not fit the base model" in caught.value.message
    assert _no_leftovers(root) == []


def test_unsupported_architecture_is_refused_before_any_work(exportable_project, monkeypatch):
    root, run_dir = exportable_project
    model_dir = json.loads((run_dir / "run.json").read_text())["model_dir"]
    copy = root / "odd-model"
    shutil.copytree(model_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["model_type"] = "gpt_neox"
    (copy / "config.json").write_text(json.dumps(config))
    spec = json.loads((run_dir / "run.json").read_text())
    spec["model_dir"] = str(copy)
    (run_dir / "run.json").write_text(json.dumps(spec))
    import forgellm.export.merge as merge

    def must_not_run(*_args, **_kwargs):
        raise AssertionError("work started before the architecture was checked")

    monkeypatch.setattr(merge, "write_merged", must_not_run)
    with pytest.raises(ForgeError) as caught:
        _export(root, quants=["f16"])
    assert "gpt_neox" in caught.value.message
    assert not (root / "exports" / "my-model").exists()


def test_disk_full_during_gguf_conversion_leaves_nothing_behind(exportable_project, monkeypatch):
    import forgellm.export.gguf_convert as gguf_convert

    root, _ = exportable_project
    first = _export(root, quants=["f16"])  # an older export of the same name must survive
    before = first.metadata.read_text()

    def disk_full(hf_dir, out_path, **_kwargs):
        out_path.write_bytes(b"GGUF" + b"\0" * 1000)  # half a file, as a real ENOSPC would leave
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gguf_convert, "convert_to_gguf", disk_full)
    with pytest.raises(ForgeError) as caught:
        _export(root, quants=["f16"])
    assert "disk filled up" in caught.value.message
    assert _no_leftovers(root) == []
    assert first.metadata.read_text() == before and (first.folder / "my-model-f16.gguf").stat().st_size > 1000


def test_not_enough_disk_space_is_said_before_any_work(exportable_project, monkeypatch):
    import forgellm.export.pipeline as pipeline

    root, _ = exportable_project
    usage = shutil.disk_usage(root)
    monkeypatch.setattr(pipeline.shutil, "disk_usage", lambda _path: usage._replace(free=1000))
    with pytest.raises(ForgeError) as caught:
        _export(root)
    assert "Not enough disk space" in caught.value.message and "--quant" in caught.value.fix
    assert not (root / "exports" / "my-model").exists() and _no_leftovers(root) == []


def test_k_quants_without_llama_cpp_are_refused_with_the_install_command(exportable_project, monkeypatch):
    import importlib.util

    root, _ = exportable_project
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real_find_spec(name, *a)
    )
    with pytest.raises(ForgeError) as caught:
        _export(root, quants=["q4_k_m"])
    assert "llama-cpp-python" in caught.value.message and "CMAKE_ARGS" in caught.value.fix
    assert not (root / "exports").exists() or not any((root / "exports").iterdir())


def test_bad_names_and_quants_are_refused(exportable_project):
    root, _ = exportable_project
    with pytest.raises(ForgeError) as caught:
        _export(root, name="My Model")
    assert "--name my-model" in caught.value.fix
    with pytest.raises(ForgeError) as caught:
        _export(root, quants=["q9_x"])
    assert "q9_x" in caught.value.message and "q8_0" in caught.value.fix
