"""How sure the figures are, and what they add up to: Wilson intervals, the paired loss change, the answer
token limit sized by the reference answers, and the verdict, on hand-made numbers with known answers."""

from __future__ import annotations

import math

import pytest

from forgellm.config.schema import TrainingSection
from forgellm.evaluation.samples import answer_token_limit
from forgellm.evaluation.stats import paired_loss_change, relative_change, t_quantile_95, wilson_interval
from forgellm.evaluation.verdict import loss_change_text, loss_verdict, stop_rate_text


@pytest.mark.parametrize(
    ("successes", "total", "low", "high"),
    [
        (81, 263, 0.2553, 0.3662),  # Newcombe (1998), Statistics in Medicine 17, table I
        (15, 148, 0.0624, 0.1605),  # same table
        (0, 20, 0.0, 0.1611),  # same table: 0/n still gets an upper bound, and no negative lower one
        (1, 29, 0.0061, 0.1718),  # same table
        (5, 10, 0.2366, 0.7634),
        (62, 64, 0.8930, 0.9914),
    ],
)
def test_wilson_interval_known_values(successes, total, low, high):
    interval = wilson_interval(successes, total)
    assert interval == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_ends_and_nothing_counted():
    assert wilson_interval(10, 10) == (pytest.approx(0.7225, abs=5e-5), 1.0)  # exactly 1: n/n shows as 100%
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(0, 0) is None


def test_t_quantiles_and_the_paired_interval():
    assert t_quantile_95(1) == pytest.approx(12.7062, abs=1e-4)
    assert t_quantile_95(4) == pytest.approx(2.7764, abs=1e-4)
    assert t_quantile_95(40) == pytest.approx(2.0211, abs=1e-4)  # past the table: the expansion
    assert t_quantile_95(120) == pytest.approx(1.9799, abs=1e-4)
    # Differences 1..5: mean 3, sd sqrt(2.5), se sqrt(0.5); t(4) = 2.7764 -> 3 ± 1.9632.
    base = [10.0] * 5
    change = paired_loss_change(base, [11.0, 12.0, 13.0, 14.0, 15.0])
    assert change.mean_difference == pytest.approx(3.0)
    assert change.interval == pytest.approx((3 - 2.7764 * math.sqrt(0.5), 3 + 2.7764 * math.sqrt(0.5)), abs=1e-4)
    assert (change.lower, change.higher, change.examples) == (0, 5, 5) and not change.within_noise


def test_the_loss_change_counts_only_moves_over_one_percent_and_skips_missing_losses():
    base = [2.0, 2.0, 2.0, 2.0, None, 2.0]
    tuned = [1.9, 2.01, 1.999, 2.1, 1.0, None]  # -5%, +0.5%, -0.05%, +5%, no base, no tuned
    change = paired_loss_change(base, tuned)
    assert change.examples == 4 and (change.lower, change.higher) == (1, 1)
    assert change.to_dict()["examples_unchanged"] == 2
    text = loss_change_text(change.to_dict())
    assert "1 more than 1% lower, 1 more than 1% higher, 2 about the same" in text and "95% CI" in text
    assert paired_loss_change([], []).interval is None and loss_change_text(paired_loss_change([], []).to_dict()) == ""


@pytest.mark.parametrize(
    ("p95_lengths", "context", "limit", "said"),
    [
        ([217] * 229, 0, 272, "1.25 x the p95 (217 tokens) of the 229 reference answers"),  # ceil(271.25 / 16) * 16
        (list(range(1, 101)), 0, 128, "the p95 (96 tokens) of the 100 reference answers"),  # p95 95.05 -> 96
        ([10] * 50, 0, 64, "at least 64"),  # short answers still get room to end
        ([1000] * 10, 0, 512, "capped"),  # generation time is bounded
        ([300] * 10, 256, 256, "capped"),  # never past the model's context
    ],
)
def test_the_answer_limit_leaves_room_above_the_reference_answers(p95_lengths, context, limit, said):
    tokens, why = answer_token_limit(p95_lengths, context)
    assert tokens == limit and why.startswith(f"max_new_tokens {limit}: ") and said in why


def test_without_reference_answers_the_limit_says_so():
    tokens, why = answer_token_limit([])
    assert tokens == 128 and "no reference answer" in why


def _verdict(base: list[float], tuned: list[float], training: TrainingSection | None = None) -> dict:
    change = paired_loss_change(base, tuned)
    base_mean, tuned_mean = sum(base) / len(base), sum(tuned) / len(tuned)
    return loss_verdict(base_mean, tuned_mean, relative_change(base_mean, tuned_mean), change, training)


BASE = [1.5 + 0.01 * (i % 17) + 0.3 * (i % 3) for i in range(64)]  # examples differ far more than models do


def test_a_clear_improvement_is_better_and_needs_no_suggestion():
    verdict = _verdict(BASE, [b - 0.2 + 0.01 * (i % 5) for i, b in enumerate(BASE)])
    assert verdict["status"] == "better" and verdict["suggestions"] == []
    assert verdict["message"].startswith("The fine-tuned model is better than the base: test loss 1.8")
    assert "95% CI" in verdict["message"] and "over 64 examples" in verdict["message"]


def test_a_change_within_noise_or_under_two_percent_is_not_better_and_says_what_to_change():
    training = TrainingSection(max_steps=10, learning_rate=2e-4, time_budget_minutes=15)
    noise = _verdict(BASE, [b + (0.05 if i % 2 else -0.05) - 0.001 for i, b in enumerate(BASE)], training)
    assert noise["status"] == "no_better"
    assert noise["message"].startswith("The fine-tuned model is not meaningfully better than the base: test loss ")
    assert noise["message"].endswith("(-0.1%, within noise).")
    suggestions = " ".join(noise["suggestions"])
    assert "training.max_steps is 10" in suggestions and "forge train --max-steps 40" in suggestions
    assert "training.time_budget_minutes is 15" in suggestions
    assert "training.learning_rate (now 0.0002; try 0.0004)" in suggestions and "more training examples" in suggestions
    # Every example 0.5% lower: certain (the interval excludes 0), yet too small to call better.
    small = _verdict(BASE, [b * 0.995 for b in BASE])
    assert small["status"] == "no_better" and "under the 2% that counts as an improvement" in small["message"]
    assert "training.epochs" in " ".join(small["suggestions"])  # no settings given: the schema's names still
    one = _verdict([2.0], [1.0])  # halved, but one example cannot tell chance from change
    assert one["status"] == "no_better" and "too few examples to tell" in one["message"]


def test_a_clearly_higher_loss_is_worse():
    verdict = _verdict(
        BASE, [b + 0.3 + 0.01 * (i % 7) for i, b in enumerate(BASE)], TrainingSection(learning_rate=1e-3)
    )
    assert verdict["status"] == "worse" and verdict["message"].startswith("The fine-tuned model is worse than the base")
    assert "Lower training.learning_rate (now 0.001; try 0.0005)" in verdict["suggestions"][0]
    broken = loss_verdict(1.8, None, None, paired_loss_change([1.8], [None]))
    assert broken["status"] == "worse" and "not a finite number" in broken["message"]


def test_fewer_answers_that_end_is_a_caveat_and_stop_rates_read_with_their_counts():
    base = {"stop_rate": 62 / 64, "stopped": 62, "answers": 64, "stop_rate_ci95": list(wilson_interval(62, 64))}
    tuned = {"stop_rate": 20 / 64, "stopped": 20, "answers": 64, "stop_rate_ci95": list(wilson_interval(20, 64))}
    assert stop_rate_text(base) == "97% (62/64, 95% CI 89–99%)"
    assert stop_rate_text({"stop_rate": 0.5}) == "50%" and stop_rate_text({"stop_rate": None}) == "–"
    change = paired_loss_change(BASE, [b - 0.3 for b in BASE])
    verdict = loss_verdict(2.0, 1.7, -0.15, change, None, (base, tuned))
    assert verdict["status"] == "better" and "stop rate 97% -> 31% (20/64)" in verdict["message"]
    assert "end-of-turn token" in verdict["suggestions"][-1]
    close = {**tuned, "stop_rate": 0.95, "stopped": 61, "stop_rate_ci95": list(wilson_interval(61, 64))}
    assert "stop rate" not in loss_verdict(2.0, 1.7, -0.15, change, None, (base, close))["message"]


def test_generation_batches_are_bounded_in_rows_and_in_kv_cache_tokens():
    from forgellm.evaluation.batched import _chunks

    assert _chunks([10] * 70, 100, 32) == [range(0, 32), range(32, 64), range(64, 70)]
    # Long prompts make fewer rows per batch: rows x (longest prompt + limit) stays within the budget,
    # and a prompt past the budget on its own is still answered, alone.
    assert _chunks([900, 100, 100, 5000, 10], 124, 32, budget=2048) == [
        range(0, 2),
        range(2, 3),
        range(3, 4),
        range(4, 5),
    ]
    assert _chunks([], 10, 8) == []
