"""The planned learning rate trains; a rate the plan's guard would raise does not (a tiny real model)."""

from __future__ import annotations

from forgellm.advisor import rules_plan
from forgellm.training.protocol import ExitCode

from .conftest import make_run_dir
from .test_loop import of_kind, run_training

STEPS = 24


def _val_losses(tiny_train_project, learning_rate: float) -> tuple[float, float]:
    """(validation loss before any update, after STEPS steps) with the plan's schedule (cosine, 5% warm-up)."""
    root, prepared = tiny_train_project(
        learning_rate=learning_rate, lr_scheduler="cosine", warmup_ratio=0.05, max_steps=STEPS,
        eval_every_steps=STEPS, save_every_steps=STEPS,
    )  # fmt: skip
    from forgellm.training.loop import TrainingLoop

    run_dir = make_run_dir(root, prepared)
    loop = TrainingLoop(run_dir, lambda _line: None, None, lambda: False)
    loop.setup(None)
    before = loop.validation_loss()
    code, events = run_training(make_run_dir(root, prepared, name="run-2"))
    assert code == ExitCode.OK
    return before, of_kind(events, "eval")[-1]["val_loss"]


def test_the_planned_rate_lowers_the_loss_and_a_crawling_rate_does_not(tiny_train_project, tiny_causal_lm_dir):
    """The random tiny model is a weak learner for LoRA (its frozen weights hold nothing to adapt), so the
    margin here is relative: the planned rate moves it at least ten times as far as the crawling one. The
    absolute margin on a real model is tests/training/test_real_learning.py's (the bundled SmolLM2)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_causal_lm_dir)
    params = config.vocab_size * config.hidden_size  # a few hundred thousand: the small-model rule applies
    planned, _ = rules_plan.learning_rate_for(params, "lora", "fp32", "cpu")
    assert rules_plan.learning_rate_moves(planned, STEPS)
    before, after = _val_losses(tiny_train_project, planned)
    planned_gain = before - after
    assert planned_gain > 0.005 * before, (before, after)

    crawling = 1e-5
    assert not rules_plan.learning_rate_moves(crawling, STEPS)  # what the plan's guard raises
    before, after = _val_losses(tiny_train_project, crawling)
    assert before - after < planned_gain / 10, (before, after, planned_gain)
