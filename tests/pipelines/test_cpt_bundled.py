"""CPT on the real httpx docs lowers the bundled model's perplexity on held-out httpx documents."""

from __future__ import annotations

from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[3] / "shared" / "data" / "httpx_docs"


@pytest.mark.slow
def test_cpt_on_httpx_docs_lowers_held_out_perplexity(tmp_path, bundled_model_dir):
    from forgellm.config.io import save_config
    from forgellm.config.schema import ForgeConfig
    from forgellm.config.stages import stage_config
    from forgellm.data.prepare.run import prepare_dataset
    from forgellm.pipelines.merge import merge_stage_result
    from forgellm.pipelines.stages import cpt_stage
    from forgellm.project.layout import ProjectLayout
    from forgellm.training.supervisor import run_training

    if not DOCS.is_dir():
        pytest.skip("the shared data sets are not there")
    training = {"max_steps": 12, "eval_every_steps": 6, "save_every_steps": 6, "micro_batch_size": 4}
    training |= {"gradient_accumulation": 1, "learning_rate": 4e-4, "lora": {"r": 4, "alpha": 8}}
    training |= {"precision": "fp32", "gradient_checkpointing": False, "lr_scheduler": "constant", "warmup_ratio": 0}
    config = ForgeConfig.model_validate(
        {"model": {"ref": "smollm2-135m", "max_length": 256}, "training": training, "stages": []}
    )
    config.stages = [cpt_stage(DOCS)]
    layout = ProjectLayout(tmp_path)
    save_config(config, layout.config_file)
    cpt = stage_config(config, "cpt")
    prepared = prepare_dataset(layout, cpt, DOCS).prepared
    result = run_training(layout, cpt, prepared=prepared)
    assert result.status == "completed"
    record = merge_stage_result(layout, "cpt", result.run_id, 200, lambda _m: None)
    held = record.held_out
    print("CPT held-out perplexity", held)
    assert held["examples"] > 0
    assert held["perplexity_after"] < held["perplexity_before"]
