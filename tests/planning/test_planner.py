"""make_plan end to end (test-double hardware, real data, rules or scripted advisors): the forge.yaml it writes."""

from __future__ import annotations

import pytest
from stage_support import planned

from forgellm.advisor import rules_plan
from forgellm.advisor.rules import RulesAdvisor
from forgellm.advisor.schemas import PlanRequest
from forgellm.config.io import load_config, save_config
from forgellm.config.schema import AdvisorSection, DataSection, ForgeConfig, RecipeSection
from forgellm.errors import ForgeError
from forgellm.hardware.memory import fit_for
from forgellm.models.catalog import get_spec
from forgellm.planning import PlanOverrides, make_plan
from forgellm.planning.candidates import available_offline
from forgellm.project import init_project

GOAL = "Make a customer support bot"


def plan(root, hardware, goal=GOAL, **kwargs):
    kwargs.setdefault("advisor", RulesAdvisor())
    kwargs.setdefault("offline", False)
    return make_plan(*planned(root), goal, hardware=hardware, **kwargs)


def test_plan_writes_a_valid_forge_yaml_and_keeps_the_user_sections(tmp_path, cpu_machine, shared_data):
    advisor = AdvisorSection(provider="openai", model="local-model", base_url="http://127.0.0.1:9/v1", sample_rows=0)
    init_project(tmp_path, name="helpdesk", advisor=advisor)
    data = shared_data / "bitext_customer_support.csv"
    result = plan(tmp_path, cpu_machine, data=data)
    assert result.config_path == tmp_path / "forge.yaml"
    config = load_config(tmp_path).config  # validates
    assert config.advisor == advisor and config.project.name == "helpdesk" and config.project.goal == GOAL
    assert config.model.ref == "smollm2-135m" and config.model.architecture == "llama"
    assert config.data.source == str(data) and config.data.format == "qa"
    assert config.data.recipe.columns["user"] == "instruction" and config.data.recipe.columns["assistant"] == "response"
    assert config.hardware.gpu_arch == "none" and config.hardware.cpu_cores == 2
    for section in (config.model, config.hardware, config.data, config.training, config.export):
        assert section.rationale, f"{type(section).__name__} has no rationale"
    assert config.training.stage == "sft"


def test_dry_run_writes_nothing(tmp_path, cpu_machine):
    root = tmp_path / "new-project"
    result = plan(root, cpu_machine, dry_run=True)
    assert result.config_path is None and not root.exists()
    assert any("without --dry-run" in note for note in result.advisor_notes)
    assert result.config.model.ref == "smollm2-135m"


def test_without_a_project_one_is_created(tmp_path, cpu_machine):
    root = tmp_path / "fresh"
    result = plan(root, cpu_machine)
    assert result.created_project and (root / "forge.yaml").is_file() and (root / "runs").is_dir()
    assert load_config(root).config.project.goal == GOAL


def test_no_goal_and_no_data_is_a_clear_error(tmp_path, cpu_machine):
    with pytest.raises(ForgeError) as caught:
        plan(tmp_path, cpu_machine, goal="  ")
    assert "goal" in caught.value.message and "forge plan" in caught.value.fix


def test_unknown_model_gets_suggestions(tmp_path, cpu_machine):
    with pytest.raises(ForgeError) as caught:
        plan(tmp_path, cpu_machine, overrides=PlanOverrides(model="qwen2.5-05b"))
    assert "Unknown model" in caught.value.message and "qwen2.5-0.5b" in caught.value.fix


def test_model_too_big_for_any_method_names_the_largest_that_fits(tmp_path, cpu_machine, online):
    with pytest.raises(ForgeError) as caught:
        plan(tmp_path, cpu_machine, overrides=PlanOverrides(model="llama-3.1-8b"))
    assert "cannot be trained on this machine" in caught.value.message
    suggested = caught.value.fix.split("--model ")[1].rstrip(".")
    spec = get_spec(suggested)
    assert fit_for(spec, cpu_machine, "lora", seq_len=1024).verdict == "fits"
    assert spec.params < get_spec("llama-3.1-8b").params
    assert not (tmp_path / "forge.yaml").exists()


def test_goal_in_another_language(tmp_path, ampere_24gb, online):
    goal = "カスタマーサポートのボットを作る"
    result = plan(tmp_path, ampere_24gb, goal=goal)
    config = load_config(tmp_path).config
    assert config.project.goal == goal
    assert get_spec(result.model_key).family == "qwen2.5"  # several languages: Qwen


def test_time_budget_bounds_max_steps_on_cpu(tmp_path, cpu_machine, shared_data):
    result = plan(tmp_path, cpu_machine, data=shared_data / "bitext_customer_support.csv")
    training, time = result.config.training, result.time
    assert training.time_budget_minutes == 30
    assert training.max_steps is not None and training.max_steps < time.steps_per_epoch * training.epochs
    assert time.total_steps == training.max_steps and time.seconds_total <= 30 * 60
    assert "fill the 30 min budget" in training.rationale
    assert training.eval_every_steps is not None and training.eval_every_steps <= training.max_steps


def test_a_time_budget_in_forge_yaml_is_respected(tmp_path, cpu_machine, shared_data):
    data = shared_data / "bitext_customer_support.csv"
    default = plan(tmp_path / "a", cpu_machine, data=data, dry_run=True)
    config = ForgeConfig()
    config.training.time_budget_minutes = 10
    (tmp_path / "b").mkdir()
    save_config(config, tmp_path / "b" / "forge.yaml")
    short = plan(tmp_path / "b", cpu_machine, data=data)
    assert short.config.training.time_budget_minutes == 10
    assert short.config.training.max_steps < default.config.training.max_steps
    assert short.time.seconds_total <= 10 * 60


def test_user_epochs_beyond_the_budget_are_kept_with_a_warning(tmp_path, cpu_machine, shared_data):
    result = plan(
        tmp_path, cpu_machine, data=shared_data / "bitext_customer_support.csv", overrides=PlanOverrides(epochs=3)
    )
    assert result.config.training.epochs == 3 and result.config.training.max_steps is None
    assert any("time budget" in w for w in result.warnings)
    assert [(o.key, o.value) for o in result.overrides] == [("training.epochs", 3)]
    assert "You set training.epochs = 3" in result.config.training.rationale


def test_gpu_machine_gets_no_default_time_budget(tmp_path, ampere_24gb, online, shared_data):
    result = plan(tmp_path, ampere_24gb, data=shared_data / "bitext_customer_support.csv")
    training = result.config.training
    assert training.time_budget_minutes is None and training.max_steps is None
    assert result.config.hardware.gpu_arch == "ampere" and training.precision == "bf16"
    assert "RTX 3090" in result.time.basis and result.time.seconds_per_epoch < 3600  # 4.5k rows on a 24 GB GPU


def test_the_advisor_gets_statistics_and_fitting_candidates_and_its_notes_are_shown(
    tmp_path, cpu_machine, shared_data, scripted
):
    def answer(request):
        advisor.notes.append("sent: goal and column statistics")
        return rules_plan.propose_plan(request)

    advisor = scripted(answer)
    result = plan(tmp_path, cpu_machine, data=shared_data / "bitext_customer_support.csv", advisor=advisor)
    (request,) = advisor.requests
    assert request.goal == GOAL and request.data["rows"] > 4000
    assert request.data["tokens"]["p99"] >= request.data["tokens"]["p50"] > 0
    assert "rows" not in request.data.get("tokens", {}) and "instruction" not in str(request.data)
    assert all("fits" in c["fit"].values() for c in request.candidates)
    assert "sent: goal and column statistics" in result.advisor_notes


def test_flags_win_over_an_advisor_that_ignores_them(tmp_path, cpu_machine, scripted):
    advisor = scripted(lambda request: rules_plan.propose_plan(PlanRequest(**{**request.__dict__, "fixed": {}})))
    result = plan(tmp_path, cpu_machine, advisor=advisor, overrides=PlanOverrides(epochs=1, batch_size=2))
    assert advisor.requests[0].fixed == {"epochs": 1, "micro_batch_size": 2}
    training = result.config.training
    assert (training.epochs, training.micro_batch_size) == (1, 2)
    by_key = {o.key: o for o in result.overrides}
    assert by_key["training.epochs"].advisor_value == 2.0  # what it proposed without the flags
    assert "You set training.epochs = 1 (advisor proposed 2.0)" in training.rationale


def test_offline_only_models_on_disk_are_candidates(tmp_path, ampere_24gb, scripted):
    advisor = scripted(rules_plan.propose_plan)
    result = plan(tmp_path, ampere_24gb, advisor=advisor, offline=True)
    assert all(c["available_offline"] for c in advisor.requests[0].candidates)
    assert result.model_key == "smollm2-135m" and available_offline(get_spec("smollm2-135m"))


def test_a_recipe_edited_in_forge_yaml_is_kept(tmp_path, cpu_machine, shared_data):
    data = shared_data / "bitext_customer_support.csv"
    recipe = RecipeSection(columns={"user": "instruction", "assistant": "response", "label": "intent"})
    save_config(ForgeConfig(data=DataSection(source=str(data), format="qa", recipe=recipe)), tmp_path / "forge.yaml")
    result = plan(tmp_path, cpu_machine, data=data)
    assert result.profile.recipe_source == "forge.yaml"
    assert load_config(tmp_path).config.data.recipe.columns["label"] == "intent"


def test_raw_documents_plan_continued_pretraining(tmp_path, cpu_machine, shared_data):
    result = plan(tmp_path, cpu_machine, goal="Answer questions about httpx", data=shared_data / "httpx_docs")
    assert result.config.data.format == "text" and result.config.training.stage == "cpt"


def test_a_model_chosen_at_init_counts_as_the_users_choice(tmp_path, ampere_24gb, online):
    init_project(tmp_path, model_ref="qwen2.5-1.5b")
    result = plan(tmp_path, ampere_24gb, goal="Review Python code")  # code alone would pick Llama or Phi
    assert result.config.model.ref == "qwen2.5-1.5b"
    assert [(o.key, o.value) for o in result.overrides] == [("model.ref", "qwen2.5-1.5b")]
    again = plan(tmp_path, ampere_24gb, goal="Review Python code")  # and on the next plan too
    assert again.config.model.ref == "qwen2.5-1.5b"


def test_a_model_the_plan_chose_is_chosen_again(tmp_path, ampere_24gb, online):
    first = plan(tmp_path, ampere_24gb, goal="Make a customer support bot")
    again = plan(tmp_path, ampere_24gb, goal="Review Python code")
    assert get_spec(first.model_key).family == "qwen2.5" and again.overrides == []
    assert get_spec(again.model_key).family in ("llama3", "phi3")


def test_classification_data_plans_a_stratified_split_and_a_consistent_config(tmp_path, cpu_machine):
    """A label next to text plans classification with splits stratified by the label; the written forge.yaml
    passes the same cross-section checks prepare runs first (config/consistency.py)."""
    import csv

    from forgellm.config.consistency import config_problems

    data = tmp_path / "intents.csv"
    with data.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["utterance", "intent"])
        for i in range(120):
            writer.writerow([f"I want to {['cancel', 'change', 'track'][i % 3]} my order number {i}",
                             ["cancel_order", "change_order", "track_order"][i % 3]])  # fmt: skip
    result = plan(tmp_path, cpu_machine, goal="Route customer messages", data=data)
    config = load_config(tmp_path).config
    assert config.data.format == "classification" and config.data.recipe.columns["label"] == "intent"
    assert config.preprocessing.split.method == "stratified" and config.preprocessing.split.column == "intent"
    assert config.preprocessing.cpt_overlap < config.model.max_length and config_problems(config) == []
    assert "classification" in result.config.data.rationale
