"""forge.yaml `stages:` (merge, validation, single-stage files unchanged), the post-CPT defaults and the
mixture written for the IFT stage, and the forgetting figure on the right slice with its threshold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from forgellm.config.io import dump_config
from forgellm.config.schema import ForgeConfig
from forgellm.config.stages import stage_config

ALPACA = Path(__file__).resolve().parents[3] / "shared" / "data" / "alpaca_en_demo.json"


def test_a_stage_is_forge_yaml_with_its_sections_merged_over_it():
    config = ForgeConfig.model_validate({
        "training": {"learning_rate": 4e-4, "max_steps": 10, "lora": {"r": 4}},
        "stages": [{"name": "cpt", "training": {"stage": "cpt"}, "data": {"source": "docs", "format": "text"}},
                   {"name": "ift", "after": "cpt", "training": {"learning_rate": 2e-4}, "model": {"ref": "/m"}}],
    })  # fmt: skip
    cpt, ift = stage_config(config, "cpt"), stage_config(config, "ift")
    assert cpt.training.stage == "cpt" and cpt.training.learning_rate == 4e-4 and cpt.training.lora.r == 4
    assert cpt.data.source == "docs" and cpt.stages == []
    assert ift.training.stage == "sft" and ift.training.learning_rate == 2e-4 and ift.model.ref == "/m"
    assert ift.training.max_steps == 10  # what a stage leaves out is the project's


@pytest.mark.parametrize(
    "stages, words",
    [
        ([{"name": "cpt", "training": {"stag": "cpt"}}], "training.stag"),
        ([{"name": "cpt", "training": {"learning_rate": 5}}], "learning_rate"),
        ([{"name": "a"}, {"name": "a"}], "used twice"),
        ([{"name": "ift", "after": "cpt"}], "not an earlier stage"),
    ],
)
def test_a_bad_stage_is_refused_with_its_name_and_key(stages, words):
    with pytest.raises(ValidationError) as caught:
        ForgeConfig.model_validate({"stages": stages})
    assert words in str(caught.value)


def test_a_single_stage_forge_yaml_is_written_as_before():
    assert "stages" not in dump_config(ForgeConfig())


def test_the_ift_stage_has_post_cpt_defaults_and_the_mixture_of_the_contract(tmp_path):
    from forgellm.pipelines import stages

    planned = ForgeConfig.model_validate({"training": {"learning_rate": 4e-4, "epochs": 3, "max_steps": None}})
    detected = {"format": "transcript", "recipe": {"transcript": {"speakers": {"user": ["## kekyo"]}}}}
    config = stages.with_stages(planned, tmp_path / "docs", tmp_path / "chats", detected, ALPACA)
    ift = stage_config(config, "ift")
    assert ift.training.learning_rate == pytest.approx(2e-4) and ift.training.epochs == 2.0
    assert ift.training.warmup_ratio >= 0.05 and "Biderman" in (ift.training.rationale or "")
    assert stage_config(config, "cpt").training.stage == "cpt"
    sources = stages.mixture_sources(tmp_path / "chats", detected, ALPACA, stages.GENERAL_SHARE)
    assert [(s["name"], s["role"], s["ratio"]) for s in sources] == [
        ("conversations", "domain", 0.75), ("general", "general", 0.25)]  # fmt: skip
    assert sum(s["ratio"] for s in sources) == 1 and sources[0]["format"] == "transcript"
    assert sources[1]["path"] == str(ALPACA)
    assert [(s.name, s.role, s.ratio) for s in ift.data.sources] == [
        ("conversations", "domain", 0.75), ("general", "general", 0.25)]  # fmt: skip
    assert "25% general data" in (ift.training.rationale or "")


def _prepared_with_roles(folder: Path) -> Path:
    rows = [
        {"source": "chats", "role": "domain", "messages": [{"role": "user", "content": "domain q"},
                                                            {"role": "assistant", "content": "domain a"}]},
        {"source": "general", "role": "general", "messages": [{"role": "user", "content": "What is 2+2?"},
                                                               {"role": "assistant", "content": "4"}]},
        {"source": "general", "role": "general", "messages": [{"role": "user", "content": "Capital of France?"},
                                                               {"role": "assistant", "content": "Paris"}]},
    ]  # fmt: skip
    folder.mkdir()
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_the_forgetting_slice_is_the_prepared_general_test_rows_then_a_file_then_the_shipped_set(tmp_path):
    from forgellm.evaluation.forgetting import general_slice

    prepared = _prepared_with_roles(tmp_path / "prepared")
    chosen = general_slice(prepared, ALPACA, 64, 0)
    assert chosen.origin == "prepared-general"
    assert [c[0]["content"] for c in chosen.conversations] == ["What is 2+2?", "Capital of France?"]
    no_roles = tmp_path / "plain"
    no_roles.mkdir()
    from_file = general_slice(no_roles, ALPACA, 16, 0)
    assert from_file.origin == "file" and len(from_file.conversations) == 16
    assert all(c[-1]["role"] == "assistant" for c in from_file.conversations)
    shipped = general_slice(no_roles, None, 16, 0)
    assert shipped.origin == "shipped" and len(shipped.conversations) == 16 and "CC BY-SA" in shipped.description


def test_general_loss_is_scored_on_the_slice_with_the_run_template(tmp_path, tiny_causal_lm_dir):
    from forgellm.config.schema import ChatTemplateSection
    from forgellm.evaluation.forgetting import general_loss, general_slice, tokenize_slice
    from forgellm.inference.engines import TransformersEngine
    from forgellm.models.loading import chat_setup

    setup = chat_setup(str(tiny_causal_lm_dir), ChatTemplateSection(name="chatml"))
    chosen = general_slice(_prepared_with_roles(tmp_path / "prepared"), None, 64, 0)
    split = tokenize_slice(chosen, setup.chat_format, setup.tokenizer, 256)
    assert len(split) == 2  # the two general rows, not the domain one
    engine = TransformersEngine.load(tiny_causal_lm_dir, setup.tokenizer, setup.chat_format, "base")
    loss = general_loss(engine, split)
    assert isinstance(loss, float) and loss > 0


def test_a_rise_over_the_threshold_is_forgetting_with_a_replay_share():
    import numpy as np

    from forgellm.evaluation.forgetting import GeneralSlice, judge_forgetting, replay_share
    from forgellm.training.data import TokenizedSplit

    split = TokenizedSplit("general", np.zeros(4, np.int32), np.zeros(4, np.int32), np.array([0, 2, 4]))
    chosen = GeneralSlice("shipped", "sample", [])
    steady = judge_forgetting({"base": 2.0, "after CPT": 2.05, "after IFT": 2.08}, chosen, split, None)
    assert not steady.forgot and steady.recommendation is None and "No forgetting" in steady.message
    weak = judge_forgetting({"base": 2.0, "after CPT": 2.1, "after IFT": 2.2}, chosen, split, None)
    assert weak.forgot and weak.recommendation["ratio"] == 0.05 and "role general and ratio 0.05" in weak.message
    strong = judge_forgetting({"base": 2.0, "after IFT": 2.6}, chosen, split, None)
    assert strong.recommendation["ratio"] == 0.25
    assert replay_share(0.3, 0.25) == 0.35 and replay_share(0.3, 0.45) == 0.5  # already mixing: more, capped
