"""The time budget becomes steps through a measured throughput; learning rates that cannot move the model
in those steps are raised; a budget too small for one step is refused with the step's duration."""

from __future__ import annotations

import pytest
from stage_support import planned
from tiny_project_support import write_support_csv

from forgellm.advisor import rules_plan
from forgellm.advisor.rules import RulesAdvisor
from forgellm.errors import ForgeError
from forgellm.hardware.precision import Measurement, choose_measured, store_decision
from forgellm.planning import PlanOverrides, make_plan
from forgellm.planning.estimate import STARTUP_SECONDS
from forgellm.training.calibrate import describe_shape

GOAL = "Make a customer support bot"


def _plan(root, hardware, data, *, dry_run=False, advisor=None, **flags):
    return make_plan(*planned(root), GOAL, data=data, hardware=hardware, advisor=advisor or RulesAdvisor(),
                     offline=False, overrides=PlanOverrides(**flags), dry_run=dry_run)  # fmt: skip


def _measure(root, hardware, data, tokens_per_second: float, **flags) -> None:
    """A measurement of the planned shape in the calibration cache, as `forge plan` stores one."""
    preview = _plan(root, hardware, data, dry_run=True, **flags)
    training = preview.config.training
    shape = describe_shape(training, preview.config.model.max_length, training.micro_batch_size)
    measured = [Measurement("fp32", tokens_per_second, 1.0, 2.0)]
    store_decision(hardware, "smollm2-135m", choose_measured(measured, shape))


def test_the_budget_is_filled_from_the_measured_throughput(tmp_path, cpu_machine, shared_data):
    data = shared_data / "bitext_customer_support.csv"
    _measure(tmp_path, cpu_machine, data, 300.0, time_budget=10)
    result = _plan(tmp_path, cpu_machine, data, time_budget=10)
    training, time = result.config.training, result.time
    assert result.precision.source == "measured" and training.precision == "fp32"
    assert time.tokens_per_second == pytest.approx(300.0) and "measured on this machine" in time.basis
    assert training.time_budget_minutes == 10 and training.max_steps == time.total_steps
    step = time.tokens_per_step / time.tokens_per_second
    assert time.seconds_total <= 10 * 60 < time.seconds_total + step + 1e-6  # full: one more step would not fit
    assert time.seconds_total >= STARTUP_SECONDS + training.max_steps * step
    assert "fill the 10 min budget" in training.rationale and "Precision fp32" in training.rationale


def test_twice_the_speed_plans_about_twice_the_training(tmp_path, cpu_machine, shared_data):
    data = shared_data / "bitext_customer_support.csv"
    tokens = {}
    for speed in (150.0, 300.0):
        root = tmp_path / str(speed)
        _measure(root, cpu_machine, data, speed, time_budget=20)
        result = _plan(root, cpu_machine, data, time_budget=20)
        tokens[speed] = result.config.training.max_steps * result.time.tokens_per_step
    assert 1.8 <= tokens[300.0] / tokens[150.0] <= 2.4


def test_a_short_budget_takes_smaller_steps(tmp_path, cpu_machine, shared_data):
    data = shared_data / "bitext_customer_support.csv"
    _measure(tmp_path, cpu_machine, data, 300.0, time_budget=4)
    result = _plan(tmp_path, cpu_machine, data, time_budget=4)
    training = result.config.training
    assert training.gradient_accumulation < 4  # the rules' effective batch of 16 would give a handful of steps
    assert "Gradient accumulation 4 ->" in training.rationale
    assert training.max_steps >= 20


def test_a_budget_too_small_for_one_step_says_how_long_a_step_takes(tmp_path, cpu_machine, shared_data):
    data = shared_data / "bitext_customer_support.csv"
    _measure(tmp_path, cpu_machine, data, 5.0, time_budget=30)
    with pytest.raises(ForgeError) as caught:
        _plan(tmp_path, cpu_machine, data, time_budget=0.2)
    assert "cannot hold one training step: one step takes ~" in caught.value.message
    assert "--time-budget" in caught.value.fix and not (tmp_path / "forge.yaml").exists()


def test_a_learning_rate_that_cannot_move_the_model_is_raised(scripted, tmp_path, cpu_machine, shared_data):
    def crawl(request):
        return rules_plan.propose_plan(request).model_copy(update={"learning_rate": 6e-5})

    result = _plan(tmp_path, cpu_machine, shared_data / "bitext_customer_support.csv", dry_run=True,
                   advisor=scripted(crawl), max_steps=10)  # fmt: skip
    fixed = next(c for c in result.corrections if c.key == "training.learning_rate")
    top = rules_plan.learning_rate_range(135_000_000, "lora")[1]  # 10 steps would want 2.5e-3: above the top
    assert fixed.proposed == pytest.approx(6e-5) and fixed.value == pytest.approx(top)
    assert "too little to change it" in fixed.reason and "highest safe rate" in fixed.reason
    assert rules_plan.learning_rate_moves(result.config.training.learning_rate, 10)


def test_a_short_run_of_a_small_model_gets_the_rate_its_steps_need(tmp_path, cpu_machine, shared_data):
    """The demo's case on a slow CPU: 25 steps at the rules' 4e-4 learned half of what 25 steps at 1e-3 did."""
    result = _plan(tmp_path, cpu_machine, shared_data / "bitext_customer_support.csv", dry_run=True, max_steps=25)
    fixed = next(c for c in result.corrections if c.key == "training.learning_rate")
    assert fixed.proposed == pytest.approx(rules_plan.SMALL_LORA_LR)
    assert fixed.value == pytest.approx(rules_plan.SHORT_RUN_LR_TOTAL / 25) == 1e-3
    assert "a short run" in fixed.reason and rules_plan.SHORT_RUN_EVIDENCE in fixed.reason
    assert result.config.training.learning_rate == pytest.approx(1e-3)


def test_a_short_run_that_repeats_its_data_keeps_the_rate(tmp_path, cpu_machine):
    """25 steps over 120 rows pass over the data more than once: a raised rate would memorise the examples,
    and the short-run total was measured only on runs that see each example once."""
    data = write_support_csv(tmp_path / "small.csv", rows=120)
    result = _plan(tmp_path, cpu_machine, data, dry_run=True, max_steps=25)
    assert result.time.steps_per_epoch < 25
    assert not [c for c in result.corrections if c.key == "training.learning_rate"]
    assert result.config.training.learning_rate == pytest.approx(rules_plan.SMALL_LORA_LR)


def test_a_rate_that_reaches_the_runs_total_is_kept(scripted, tmp_path, cpu_machine, shared_data):
    def usual(request):
        return rules_plan.propose_plan(request).model_copy(update={"learning_rate": 3e-4})

    result = _plan(tmp_path, cpu_machine, shared_data / "bitext_customer_support.csv", dry_run=True,
                   advisor=scripted(usual), max_steps=100)  # fmt: skip
    assert not [c for c in result.corrections if c.key == "training.learning_rate"]
    assert result.config.training.learning_rate == pytest.approx(3e-4)


def test_only_the_measured_regime_asks_for_a_short_runs_total():
    small, big = 135_000_000, 1_500_000_000
    assert rules_plan.learning_rate_total_for(small, "lora", "fp32", "cpu") == rules_plan.SHORT_RUN_LR_TOTAL
    assert rules_plan.learning_rate_total_for(small, "lora", "bf16", "cpu") == rules_plan.SHORT_RUN_LR_TOTAL
    # Where it was not measured, only a rate that cannot move the model at all is raised.
    assert rules_plan.learning_rate_total_for(small, "lora", "bf16", "cuda") == rules_plan.MIN_LR_TOTAL
    assert rules_plan.learning_rate_total_for(small, "full", "fp32", "cpu") == rules_plan.MIN_LR_TOTAL
    assert rules_plan.learning_rate_total_for(big, "lora", "bf16", "cuda") == rules_plan.MIN_LR_TOTAL
    assert rules_plan.learning_rate_total_for(small, "lora", "fp32", "cpu", epochs=1.5) == rules_plan.MIN_LR_TOTAL
