"""`forge eval` on the bundled SmolLM2-135M with the limits `forge ignite` uses: it must fit the demo's budget."""

from __future__ import annotations

import math
import time

import pytest
from evaluation.eval_support import RUN_ID, build_project
from stage_support import staged

from forgellm.pipeline import EVAL_MAX_EXAMPLES, EVAL_MAX_NEW_TOKENS, EVAL_SAMPLES

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

IGNITE_LIMITS = {"samples": EVAL_SAMPLES, "max_examples": EVAL_MAX_EXAMPLES, "max_new_tokens": EVAL_MAX_NEW_TOKENS}


def test_ignite_sized_evaluation_of_the_bundled_model(tmp_path, bundled_model_dir, _support_csv):
    from forgellm.evaluation import evaluate_run

    root = build_project(
        tmp_path / "bundled",
        bundled_model_dir,
        _support_csv,
        strong_adapter=False,
        model={"ref": "smollm2-135m", "max_length": 256},
        preprocessing={"split": {"train": 0.6, "val": 0.1, "test": 0.3}},  # enough test examples to fill the limit
    )
    started = time.perf_counter()
    result = evaluate_run(*staged(root), **IGNITE_LIMITS)
    seconds = time.perf_counter() - started
    print(f"bundled model, ignite limits: {seconds:.1f} s ({result.seconds})")
    summary, settings = result.summary, result.settings
    assert result.run_id == RUN_ID and summary["samples_generated"] == min(EVAL_SAMPLES, settings["test_conversations"])
    assert summary["examples_scored"] == min(EVAL_MAX_EXAMPLES, settings["test_examples"])
    # The limit is sized by the reference answers (in SmolLM2's tokens), above the longest usual answer.
    assert (
        settings["max_new_tokens_source"] == "references" and "reference answers" in settings["max_new_tokens_reason"]
    )
    assert settings["max_new_tokens"] % 16 == 0 and 64 <= settings["max_new_tokens"] <= 512
    assert summary["verdict"]["status"] in ("better", "no_better", "worse")
    for side in ("base", "tuned"):
        # A real instruct model on real support questions: far better than chance over 49k tokens (ln 49152 ~ 10.8).
        assert 0.3 < summary[side]["loss"] < 5 and summary[side]["perplexity"] == pytest.approx(
            math.exp(summary[side]["loss"])
        )
        assert all(getattr(r, side).text for r in result.examples)  # it writes something
    # The demo budget is 90 s on an idle 2-core machine; a busy CI machine gets twice that.
    assert seconds < 180
