"""Guards: an absurd or hostile advisor answer is corrected by rules, and the reason is written down."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from stage_support import planned

from forgellm.advisor import rules_plan
from forgellm.advisor.schemas import PlanProposal
from forgellm.errors import ForgeError
from forgellm.hardware.memory import TIGHT_ABOVE
from forgellm.models.architectures import GGUF_ARCHITECTURES
from forgellm.planning import PlanOverrides, make_plan
from forgellm.planning.candidates import resolve_target
from forgellm.planning.guards import gguf_warnings

GIB = 2**30


def hostile(request, **changes) -> PlanProposal:
    """The rules' own answer with some fields replaced, unvalidated, as a buggy or hostile advisor might send."""
    values = {**rules_plan.propose_plan(request).__dict__, **changes}
    return PlanProposal.model_construct(**values)


def plan_with(scripted, tmp_path, hardware, goal="Make a customer support bot", overrides=None, **changes):
    advisor = scripted(lambda request: hostile(request, **changes))
    return make_plan(
        *planned(tmp_path), goal, advisor=advisor, hardware=hardware, overrides=overrides, dry_run=True, offline=False
    )


def correction(result, key):
    found = [c for c in result.corrections if c.key == key]
    assert found, f"no correction of {key}: {[c.key for c in result.corrections]}"
    return found[0]


def within_budget(result) -> bool:
    return result.memory.total_bytes <= TIGHT_ABOVE * result.memory_budget_bytes


def test_schema_refuses_an_absurd_learning_rate():
    with pytest.raises(ValidationError):
        PlanProposal(model="smollm2-135m", method="lora", learning_rate=0.5, max_length=512)


def test_absurd_learning_rate_is_corrected_and_explained(scripted, tmp_path, cpu_machine, online):
    result = plan_with(scripted, tmp_path, cpu_machine, learning_rate=0.5)
    fixed = correction(result, "training.learning_rate")
    assert fixed.proposed == 0.5 and fixed.value == pytest.approx(rules_plan.SMALL_LORA_LR)  # the measured CPU rate
    assert result.config.training.learning_rate == pytest.approx(rules_plan.SMALL_LORA_LR)
    expected = f"advisor proposed learning_rate 0.5; corrected to {rules_plan.SMALL_LORA_LR:g}"
    assert expected in result.config.training.rationale


def test_usual_lora_rate_on_a_small_model_in_bf16_is_corrected_by_the_size_rule(
    scripted, tmp_path, ampere_24gb, online
):
    result = plan_with(scripted, tmp_path, ampere_24gb, model="smollm2-135m", learning_rate=rules_plan.SMALL_LORA_LR)
    fixed = correction(result, "training.learning_rate")
    assert fixed.value == pytest.approx(1e-5) and "500M" in fixed.reason


def test_usual_lora_rate_on_a_small_model_in_fp32_is_kept(scripted, tmp_path, cpu_machine, online):
    result = plan_with(scripted, tmp_path, cpu_machine, learning_rate=rules_plan.SMALL_LORA_LR)
    assert not [c for c in result.corrections if c.key == "training.learning_rate"]
    assert result.config.training.learning_rate == pytest.approx(rules_plan.SMALL_LORA_LR)


def test_unknown_model_is_replaced_by_the_rules_choice(scripted, tmp_path, cpu_machine, online):
    result = plan_with(scripted, tmp_path, cpu_machine, model="gpt-7-ultra")
    fixed = correction(result, "model.ref")
    assert fixed.proposed == "gpt-7-ultra" and fixed.value == "smollm2-135m"
    assert result.config.model.ref == "smollm2-135m"
    assert "gpt-7-ultra" in result.config.model.rationale and "not among" in result.config.model.rationale


def test_huge_micro_batch_is_cut_and_accumulation_raised(scripted, tmp_path, cpu_machine, online):
    result = plan_with(scripted, tmp_path, cpu_machine, micro_batch_size=512, gradient_accumulation=1)
    fixed = correction(result, "training.micro_batch_size")
    training = result.config.training
    assert fixed.proposed == 512 and training.micro_batch_size < 512
    assert training.micro_batch_size * training.gradient_accumulation >= 512  # same examples per step
    assert within_budget(result)
    assert "needs ~" in fixed.reason and "advisor proposed micro_batch_size 512" in training.rationale


def test_max_length_beyond_the_context_is_capped(scripted, tmp_path, cpu_machine, online):
    result = plan_with(scripted, tmp_path, cpu_machine, max_length=100_000)
    fixed = correction(result, "model.max_length")
    assert fixed.proposed == 100_000 and fixed.value == 8192 and "context" in fixed.reason
    assert result.config.model.max_length <= 8192
    assert within_budget(result)


def test_qlora_and_bf16_on_a_cpu_without_them_are_corrected(scripted, tmp_path, cpu_machine, online):
    result = plan_with(scripted, tmp_path, cpu_machine, method="qlora", precision="bf16")
    assert correction(result, "training.method").value == "lora"
    assert correction(result, "training.precision").value == "fp32"
    assert result.config.training.method == "lora" and result.config.training.precision == "fp32"


def test_full_fine_tuning_that_cannot_fit_falls_back_to_a_lighter_method(scripted, tmp_path, turing_4gb, online):
    result = plan_with(scripted, tmp_path, turing_4gb, model="qwen2.5-1.5b", method="full", gradient_checkpointing=True)
    assert result.config.training.method in ("lora", "qlora")
    assert correction(result, "training.method").proposed == "full"
    assert within_budget(result)


def test_a_sound_proposal_passes_untouched(scripted, tmp_path, cpu_machine, online):
    result = plan_with(scripted, tmp_path, cpu_machine)
    assert result.corrections == []
    assert "corrected" not in (result.config.training.rationale or "")


def test_user_method_that_cannot_run_is_an_error_not_a_correction(scripted, tmp_path, cpu_machine, online):
    with pytest.raises(ForgeError) as caught:
        plan_with(scripted, tmp_path, cpu_machine, overrides=PlanOverrides(method="qlora"))
    assert "CUDA" in caught.value.message and "--method lora" in caught.value.fix


def test_user_batch_size_is_kept_and_memory_found_elsewhere(scripted, tmp_path, cpu_machine, online):
    overrides = PlanOverrides(batch_size=8)
    result = plan_with(scripted, tmp_path, cpu_machine, overrides=overrides, max_length=8192)
    assert result.config.training.micro_batch_size == 8
    assert [o.key for o in result.overrides] == ["training.micro_batch_size"]
    assert within_budget(result)


def write_model_folder(folder, model_type: str, with_template: bool):
    folder.mkdir()
    config = {
        "model_type": model_type,
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "vocab_size": 1000,
        "max_position_embeddings": 512,
    }
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer_config = {"chat_template": "{{ messages }}"} if with_template else {}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return folder


def test_model_without_template_or_gguf_support_gets_warnings(tmp_path, cpu_machine, online):
    folder = write_model_folder(tmp_path / "tiny-neox", "gpt_neox", with_template=False)
    assert "gpt_neox" not in GGUF_ARCHITECTURES
    result = make_plan(
        *planned(tmp_path / "project"),
        "Make a chat bot",
        advisor=None,
        provider="rules",
        hardware=cpu_machine,
        overrides=PlanOverrides(model=str(folder)),
        dry_run=True,
        offline=False,
    )
    assert result.config.model.ref == str(folder)
    assert result.config.model.chat_template.name == "chatml"
    assert any("no chat template" in w for w in result.warnings)
    assert any("GGUF export" in w and "gpt_neox" in w for w in result.warnings)
    assert "safetensors" in result.config.export.rationale
    assert result.config.model.max_length <= 512  # the folder's context


def test_model_with_template_and_llama_architecture_gets_no_warnings(tmp_path):
    folder = write_model_folder(tmp_path / "tiny-llama", "llama", with_template=True)
    target = resolve_target(str(folder))
    assert target.architecture == "llama" and gguf_warnings(target) == []


def test_a_plan_by_steps_alone_is_kept_and_rendered(scripted, tmp_path, cpu_machine, online):
    from forgellm.cli.plan_cmds import _rows

    result = plan_with(scripted, tmp_path, cpu_machine, epochs=None, max_steps=40)
    assert result.config.training.epochs is None and result.config.training.max_steps == 40
    assert ("Length", "at most 40 steps") in _rows(result)


def test_a_plan_with_no_length_gets_the_rules_epochs(scripted, tmp_path, cpu_machine, online):
    result = plan_with(scripted, tmp_path, cpu_machine, epochs=None, max_steps=None)
    assert correction(result, "training.epochs").value == result.config.training.epochs > 0
