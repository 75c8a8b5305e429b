"""The offline planning rules: model choice by goal and machine, hyper-parameters with reasons."""

from __future__ import annotations

import math

import pytest

from forgellm.advisor import rules_plan
from forgellm.advisor.schemas import PlanRequest
from forgellm.hardware.memory import TIGHT_ABOVE, estimate_training_memory
from forgellm.models import lengths
from forgellm.models.catalog import get_spec
from forgellm.models.dims import ModelDims
from forgellm.planning.candidates import catalog_candidates

BITEXT_LIKE = {"rows": 4500, "tokens": {"p50": 190.0, "p99": 299.0, "max": 350.0, "mean": 188.0}}


def request(hardware, goal: str, *, data=None, fixed=None, offline=False, seq_len=320) -> PlanRequest:
    return PlanRequest(
        goal=goal,
        hardware=hardware.to_dict(),
        candidates=catalog_candidates(hardware, seq_len, offline=offline),
        data=BITEXT_LIKE if data is None else data,
        fixed=fixed or {},
        offline=offline,
    )


def fits_with_margin(proposal, hardware) -> bool:
    """Independent of the rules' own bookkeeping: the estimator on the proposal's exact settings."""
    budget = rules_plan.MemoryBudget.from_hardware(hardware.to_dict())
    spec = get_spec(proposal.model)
    estimate = estimate_training_memory(
        spec,
        method=proposal.method,
        seq_len=proposal.max_length,
        micro_batch=proposal.micro_batch_size,
        precision=proposal.precision,
        lora_r=proposal.lora_r,
        gradient_checkpointing=proposal.gradient_checkpointing,
        device=budget.device,
    )
    return estimate.total_bytes <= TIGHT_ABOVE * budget.bytes


def test_support_goal_on_cpu_gets_the_bundled_model_with_small_model_rates(cpu_machine, online):
    plan = rules_plan.propose_plan(request(cpu_machine, "Make a customer support bot"))
    assert plan.model == "smollm2-135m"
    assert plan.method == "lora" and plan.precision == "fp32"
    assert plan.learning_rate == pytest.approx(rules_plan.SMALL_LORA_LR) and plan.lora_r == 4 and plan.lora_alpha == 8
    assert "500M" in plan.why_hyperparameters and "on GPUs only" in plan.why_hyperparameters
    assert "no GPU" in plan.why_model
    assert plan.max_length == 320 and "299" in plan.why_hyperparameters
    assert fits_with_margin(plan, cpu_machine)
    assert 12 <= plan.micro_batch_size * plan.gradient_accumulation <= 20


def test_24gb_ampere_support_goal_picks_qwen(ampere_24gb, online):
    plan = rules_plan.propose_plan(request(ampere_24gb, "Make a customer support bot"))
    assert get_spec(plan.model).family == "qwen2.5"
    assert plan.precision == "bf16"
    assert plan.method in ("lora", "qlora", "full")
    assert fits_with_margin(plan, ampere_24gb)
    assert get_spec(plan.model).licence == "apache-2.0"  # the research-licence 3B is passed over
    low, high = rules_plan.learning_rate_range(get_spec(plan.model).params, plan.method)
    assert low <= plan.learning_rate <= high


@pytest.mark.parametrize("goal", ["Review Python code and suggest fixes", "Solve maths word problems step by step"])
def test_24gb_ampere_code_and_reasoning_goals_pick_llama_or_phi(ampere_24gb, online, goal):
    plan = rules_plan.propose_plan(request(ampere_24gb, goal))
    assert get_spec(plan.model).family in ("llama3", "phi3")
    assert fits_with_margin(plan, ampere_24gb)


def test_tiny_4gb_gpu_gets_a_model_that_fits_in_fp16(turing_4gb, online):
    plan = rules_plan.propose_plan(request(turing_4gb, "Make a customer support bot"))
    spec = get_spec(plan.model)
    assert spec.params < 2e9
    assert plan.precision == "fp16"  # Turing has no bf16
    assert fits_with_margin(plan, turing_4gb)
    # The rules prefer the largest model that fits, so LoRA of the same model must not have fitted.
    if plan.method == "qlora":
        lora = plan.model_copy(update={"method": "lora"})
        assert not fits_with_margin(lora, turing_4gb)


def test_small_goal_on_a_big_gpu_stays_small(ampere_24gb, online):
    plan = rules_plan.propose_plan(request(ampere_24gb, "A tiny model for quick tests on my phone"))
    assert get_spec(plan.model).params <= rules_plan.SMALL_INTENT_MAX_PARAMS
    assert get_spec(plan.model).family in ("smollm2", "tinyllama")


def test_cpu_plan_for_another_language_says_what_the_small_model_lacks(cpu_machine, online):
    plan = rules_plan.propose_plan(request(cpu_machine, "日本語のサポートボットを作る"))
    assert plan.model == "smollm2-135m" and "English" in plan.why_model and "Qwen" in plan.why_model
    english = rules_plan.propose_plan(request(cpu_machine, "Make a customer support bot"))
    assert "English" not in english.why_model


def test_offline_gpu_machine_gets_the_bundled_model(ampere_24gb, online):
    plan = rules_plan.propose_plan(request(ampere_24gb, "Make a customer support bot", offline=True))
    assert plan.model == "smollm2-135m" and "offline" in plan.why_model


def test_user_flags_win(ampere_24gb, online):
    fixed = {"model": "qwen2.5-0.5b", "method": "lora", "epochs": 1.0, "micro_batch_size": 2, "max_steps": 50}
    plan = rules_plan.propose_plan(request(ampere_24gb, "Write code", fixed=fixed))
    assert (plan.model, plan.method, plan.epochs, plan.micro_batch_size, plan.max_steps) == (
        "qwen2.5-0.5b",
        "lora",
        1.0,
        2,
        50,
    )
    assert "your choice" in plan.why_model and "your choice" in plan.why_method


def test_every_candidate_gets_a_learning_rate_inside_the_guard_range(ampere_24gb, online):
    for candidate in catalog_candidates(ampere_24gb, 512, offline=False):
        for method in ("lora", "qlora", "full"):
            lr, why = rules_plan.learning_rate_for(candidate["params"], method)
            low, high = rules_plan.learning_rate_range(candidate["params"], method)
            assert low <= lr <= high and why


@pytest.mark.parametrize("p99", [1.0, 63.0, 64.0, 65.0, 299.0, 1000.5, 4095.0])
def test_max_length_covers_p99_in_multiples_of_64(p99):
    value, why = lengths.max_length_for(p99, 8192)
    # The smallest multiple of 64 that covers p99, but never below the one floor (MIN_MAX_LENGTH, 256).
    assert value % 64 == 0 and value >= p99 and value - 64 < max(p99, lengths.MIN_MAX_LENGTH)
    assert value == max(lengths.MIN_MAX_LENGTH, math.ceil(p99 / 64) * 64)
    assert f"{p99:.0f}" in why


def test_max_length_is_capped_by_the_context_and_defaults_without_data():
    assert lengths.max_length_for(5000.0, 2048)[0] == 2048
    value, why = lengths.max_length_for(None, 8192)
    assert value == lengths.DEFAULT_MAX_LENGTH and "no data" in why


def test_fewer_epochs_for_more_data():
    epochs = [rules_plan.epochs_for(rows)[0] for rows in (100, 999, 1000, 9999, 10_000, 1_000_000)]
    assert epochs == sorted(epochs, reverse=True)
    assert 1 <= min(epochs) and max(epochs) <= 3


@pytest.mark.parametrize(
    ("goal", "languages", "intent", "multilingual"),
    [
        ("Make a customer support bot", None, "support", False),
        ("Erstelle einen Kundendienst-Assistenten für unseren Support", None, "support", False),
        ("Crée un assistant pour le service client de notre boutique", None, "support", True),
        ("カスタマーサポートのボットを作る", None, "support", True),
        ("回答客户的问题", None, "support", True),
        ("Answer questions about our product", ["fr"], "multilingual", True),
        ("Summarise meeting notes", None, "general", False),
        ("Write unit tests for our Python code", None, "code", False),
        ("A small bot for smoke testing the pipeline", None, "small", False),
    ],
)
def test_goal_intents_in_several_languages(goal, languages, intent, multilingual):
    intents = rules_plan.goal_intents(goal, languages)
    assert intents[0] == intent
    assert ("multilingual" in intents) is multilingual


def test_micro_batch_is_the_largest_power_of_two_that_fits(cpu_machine):
    budget = rules_plan.MemoryBudget.from_hardware(cpu_machine.to_dict())
    dims = ModelDims(30, 576, 1536, 9, 3, 49152, True)
    settings = dict(method="full", max_length=2048, lora_r=4, checkpointing=False)
    micro = rules_plan.largest_micro_batch(dims, budget, **settings)
    assert micro is not None and math.log2(micro).is_integer()

    def total(m: int) -> int:
        return estimate_training_memory(
            dims,
            method="full",
            seq_len=2048,
            micro_batch=m,
            precision="fp32",
            gradient_checkpointing=False,
            device="cpu",
        ).total_bytes

    assert budget.fits(total(micro))
    if micro < rules_plan.MAX_MICRO_BATCH_CPU:
        assert not budget.fits(total(micro * 2))
