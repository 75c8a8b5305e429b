from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forgellm.config.io import config_from_mapping, dump_config, load_config, save_config
from forgellm.config.schema import SCHEMA_VERSION, ForgeConfig
from forgellm.errors import ForgeError
from forgellm.files import read_json_object


def write(tmp_path, text: str):
    path = tmp_path / "forge.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_round_trip(tmp_path):
    config = ForgeConfig()
    path = save_config(config, tmp_path)
    loaded = load_config(path)
    assert loaded.config == config
    assert loaded.file_version == SCHEMA_VERSION
    assert loaded.migration_notes == []


def test_saved_file_has_header_and_no_secret_fields(tmp_path):
    text = dump_config(ForgeConfig())
    assert text.startswith("# forge.yaml")
    assert "api_key" not in yaml.safe_load(text)["advisor"]


def test_all_problems_reported_at_once_with_key_value_and_allowed(tmp_path):
    path = write(
        tmp_path,
        "version: 2\n"
        "training:\n"
        "  method: lorax\n"
        "  lr: 0.001\n"
        "  micro_batch_size: 0\n"
        "model:\n"
        "  chat_template:\n"
        "    name: chatmll\n",
    )
    with pytest.raises(ForgeError) as caught:
        load_config(path)
    error = caught.value
    assert "4 problems" in error.message
    text = "\n".join(error.details)
    assert "line 3: training.method" in text and "'lorax'" in text and "'lora', 'qlora' or 'full'" in text
    assert "line 4: training.lr: unknown key" in text and "Did you mean `learning_rate`" in text
    assert "training.micro_batch_size" in text and "greater than or equal to 1" in text
    assert "model.chat_template.name" in text and "'chatml'" in text


def test_cross_field_rule_names_the_section():
    with pytest.raises(ForgeError) as caught:
        config_from_mapping({"preprocessing": {"split": {"train": 0.8, "val": 0.3, "test": 0.1}}}, environ={})
    assert any("preprocessing.split" in d and "add up to 1.0" in d for d in caught.value.details)


def test_secret_in_forge_yaml_is_refused_with_login_advice():
    with pytest.raises(ForgeError) as caught:
        config_from_mapping({"advisor": {"provider": "gemini", "api_key": "AIza-secret"}}, environ={})
    detail = caught.value.details[0]
    assert "advisor.api_key" in detail and "forge login" in detail
    assert "AIza-secret" not in str(caught.value)


def test_yaml_syntax_error_gives_line(tmp_path):
    path = write(tmp_path, "training:\n  method: lora\n   epochs: 3\n")
    with pytest.raises(ForgeError) as caught:
        load_config(path)
    assert "not valid YAML at line 3" in caught.value.message


def test_not_a_mapping(tmp_path):
    with pytest.raises(ForgeError, match="must be a mapping"):
        load_config(write(tmp_path, "- just\n- a list\n"))


def test_missing_file_says_run_init(tmp_path):
    with pytest.raises(ForgeError) as caught:
        load_config(tmp_path)
    assert "forge init" in caught.value.fix


def test_future_version_is_refused_and_file_untouched(tmp_path):
    text = "version: 99\nproject:\n  name: from-the-future\n"
    path = write(tmp_path, text)
    with pytest.raises(ForgeError) as caught:
        load_config(path)
    assert "version 99" in caught.value.message and "newer Forge" in caught.value.message
    assert "pip install -U forgellm" in caught.value.fix
    assert path.read_text() == text


def test_version_one_file_is_migrated(tmp_path):
    path = write(
        tmp_path,
        "version: 1\n"
        "model:\n  name: qwen\n  chat_template: chatml\n  system_prompt: Be brief.\n"
        "training:\n  lr: 0.0001\n  batch_size: 2\n  grad_accum: 8\n  scheduler: linear\n  num_epochs: 2\n",
    )
    loaded = load_config(path)
    config = loaded.config
    assert loaded.file_version == 1
    assert config.version == SCHEMA_VERSION
    assert config.model.ref == "qwen"
    assert config.model.chat_template.name == "chatml"
    assert config.model.chat_template.system_prompt == "Be brief."
    assert (config.training.learning_rate, config.training.micro_batch_size) == (1e-4, 2)
    assert (config.training.gradient_accumulation, config.training.lr_scheduler, config.training.epochs) == (
        8,
        "linear",
        2,
    )
    assert any("training.lr -> training.learning_rate" in n for n in loaded.migration_notes)
    # Saved again, it is a current file that loads without migration.
    save_config(config, tmp_path / "new.yaml")
    again = load_config(tmp_path / "new.yaml")
    assert again.migration_notes == [] and again.config == config


def test_env_override_applies_and_is_reported(tmp_path):
    path = save_config(ForgeConfig(), tmp_path)
    env = {"FORGE_TRAINING__LEARNING_RATE": "5e-5", "FORGE_TRAINING__PACKING": "false", "FORGE_HOME": "/x"}
    loaded = load_config(path, environ=env)
    assert loaded.config.training.learning_rate == 5e-5
    assert loaded.config.training.packing is False
    assert loaded.env_overrides == {
        "training.learning_rate": "FORGE_TRAINING__LEARNING_RATE",
        "training.packing": "FORGE_TRAINING__PACKING",
    }


def test_bad_env_override_names_the_variable(tmp_path):
    path = save_config(ForgeConfig(), tmp_path)
    with pytest.raises(ForgeError) as caught:
        load_config(path, environ={"FORGE_TRAINING__METHOD": "magic", "FORGE_TRAINING__LRATE": "1"})
    text = "\n".join(caught.value.details)
    assert "training.method (set by FORGE_TRAINING__METHOD)" in text
    assert "training.lrate (set by FORGE_TRAINING__LRATE): unknown key" in text


def test_custom_template_needs_jinja():
    with pytest.raises(ForgeError) as caught:
        config_from_mapping({"model": {"chat_template": {"name": "custom"}}}, environ={})
    assert any("needs `jinja`" in d for d in caught.value.details)


# --- property: load -> save -> load is the identity -------------------------------------------------

texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
configs = st.builds(
    lambda goal, lr, r, method, quants, system, role, epochs, max_steps, seed, template: ForgeConfig.model_validate(
        {
            "project": {"name": "p", "goal": goal},
            "model": {"chat_template": {"name": template, "system_prompt": system, "role_names": role}},
            "training": {
                "learning_rate": lr,
                "method": method,
                "epochs": epochs,
                "max_steps": max_steps,
                "lora": {"r": r},
            },
            "export": {"quantizations": quants},
            "preprocessing": {"seed": seed},
        }
    ),
    goal=st.none() | texts,
    lr=st.floats(min_value=1e-7, max_value=0.5, allow_nan=False),
    r=st.integers(1, 1024),
    method=st.sampled_from(["lora", "qlora", "full"]),
    quants=st.lists(st.sampled_from(["f16", "q8_0", "q4_k_m", "q2_k"]), max_size=3),
    system=st.none() | texts,
    role=st.dictionaries(st.sampled_from(["system", "user", "assistant"]), texts.filter(bool), max_size=3),
    epochs=st.none() | st.floats(min_value=0.01, max_value=100, allow_nan=False),
    max_steps=st.integers(1, 10**6),
    seed=st.integers(-(2**31), 2**31),
    template=st.sampled_from(["auto", "chatml", "llama3", "gemma"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=configs)
def test_round_trip_is_identity(tmp_path, config):
    path = save_config(config, tmp_path / "forge.yaml")
    first = load_config(path, environ={}).config
    assert first == config
    save_config(first, path)
    assert load_config(path, environ={}).config == config


def test_duplicate_section_is_refused(tmp_path):
    path = write(tmp_path, "training:\n  epochs: 2\nproject:\n  name: x\ntraining:\n  method: lora\n")
    with pytest.raises(ForgeError) as caught:
        load_config(path)
    assert "`training` twice (lines 1 and 5)" in caught.value.message


def test_read_json_object_gives_an_empty_dict_for_anything_but_an_object(tmp_path):
    good, cut, listed = tmp_path / "good.json", tmp_path / "cut.json", tmp_path / "list.json"
    good.write_text('{"status": "completed"}', encoding="utf-8")
    cut.write_text('{"status": "comp', encoding="utf-8")
    listed.write_text("[1, 2]", encoding="utf-8")
    assert read_json_object(good) == {"status": "completed"}
    assert read_json_object(cut) == read_json_object(listed) == read_json_object(tmp_path / "missing.json") == {}
    assert read_json_object(tmp_path) == {}  # a folder: unreadable as a file
