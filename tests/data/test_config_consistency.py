"""Rules across forge.yaml's sections: plan checks them before writing, prepare before reading a row."""

from __future__ import annotations

import pytest
from stage_support import staged

from forgellm.config.consistency import config_problems
from forgellm.config.io import load_config
from forgellm.config.schema import ForgeConfig
from forgellm.errors import ErrorCode, ForgeError


def _config(**sections) -> ForgeConfig:
    return ForgeConfig.model_validate(sections)


def test_each_cross_section_rule_names_its_keys_and_the_fix():
    assert config_problems(ForgeConfig()) == []
    [overlap] = config_problems(_config(model={"max_length": 64}, preprocessing={"cpt_overlap": 64}))
    assert "preprocessing.cpt_overlap (64)" in overlap and "model.max_length (64)" in overlap and "to 8" in overlap
    qa = {"format": "qa", "recipe": {"columns": {"user": "q", "assistant": "a"}}}
    [stratified] = config_problems(_config(data=qa, preprocessing={"split": {"method": "stratified", "column": "t"}}))
    assert "data.recipe.columns.label" in stratified
    [temporal] = config_problems(_config(data=qa, preprocessing={"split": {"method": "temporal", "column": "d"}}))
    assert "data.recipe.columns.date" in temporal
    [balance] = config_problems(_config(data=qa, preprocessing={"balance": True}))
    assert "balance" in balance
    # With format auto, prepare's detection fills the label and date: nothing to check yet.
    assert config_problems(_config(preprocessing={"balance": True})) == []


def test_prepare_refuses_a_contradicting_forge_yaml_before_reading_the_data(make_project, tmp_path):
    project = make_project(model={"max_length": 64}, preprocessing={"cpt_overlap": 64})
    data = tmp_path / "docs.jsonl"
    data.write_text('{"text": "hello"}\n')
    from forgellm.data.prepare.run import prepare_dataset

    with pytest.raises(ForgeError) as refused:
        prepare_dataset(*staged(project), data)
    assert refused.value.code == ErrorCode.CONFIG_INVALID and "cpt_overlap" in refused.value.details[0]
    assert not (project / "data" / "prepared").exists()
    assert load_config(project).config.preprocessing.cpt_overlap == 64  # nothing rewritten
