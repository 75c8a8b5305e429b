"""One plain verdict on a fine-tuning run: better, not meaningfully better, or worse than the base model,
with what to change when it is not better. It rests on the test loss, the figure measured on the most
examples; a change counts only when it is large enough to matter and larger than the noise."""

from __future__ import annotations

from typing import Any

from forgellm.evaluation.stats import LossChange

MEANINGFUL = 0.02  # a test loss at least 2% lower is an improvement a user can notice; less is a rounding
STATUSES = ("better", "no_better", "worse")


def loss_verdict(
    base: float | None, tuned: float | None, relative: float | None, change: LossChange, training: Any | None = None,
    stops: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """{"status": better | no_better | worse, "message": one sentence, "suggestions": [what to change]}.

    better: the loss fell by at least MEANINGFUL and the paired interval lies below 0; worse: it rose by at
    least as much with the interval above 0; anything else is no_better. ``training`` (the run's training
    settings) lets the suggestions name the values the run used; ``stops`` (the summary's base and tuned
    sides) adds a caveat when the fine-tuned model clearly ends fewer answers on its own."""
    status, message = _classify(base, tuned, relative, change)
    suggestions = {"better": [], "no_better": _not_better(training), "worse": _worse(training)}[status]
    caveat = _fewer_stops(*stops) if stops is not None else None
    if caveat:
        message += f" {caveat}"
        suggestions.append(
            "Check that training teaches the end-of-turn token: `forge template` highlights the tokens the "
            "model learns from, and the token that ends a turn must be among them."
        )
    return {"status": status, "message": message, "suggestions": suggestions}


def _classify(base: float | None, tuned: float | None, relative: float | None, change: LossChange) -> tuple[str, str]:
    if tuned is None:
        return "worse", "The fine-tuned model's test loss is not a finite number: its weights may be broken."
    if base is None or relative is None:
        return "no_better", "The base model's test loss is not a finite number, so the models cannot be compared."
    figures = f"test loss {base:.3f} -> {tuned:.3f} ({relative:+.1%}"
    low, high = change.interval or (0.0, 0.0)  # no interval: nothing can be told from chance
    if change.interval is not None and (relative <= -MEANINGFUL and high < 0 or relative >= MEANINGFUL and low > 0):
        detail = (
            f"; per example {change.mean_difference:+.3f}, 95% CI {low:+.3f} to {high:+.3f} "
            f"over {change.examples} examples)"
        )
        if relative < 0:
            return "better", f"The fine-tuned model is better than the base: {figures}{detail}."
        return "worse", f"The fine-tuned model is worse than the base: {figures}{detail}."
    if change.interval is None:
        why = ", within noise: too few examples to tell"
    elif change.within_noise:
        why = ", within noise"
    else:
        why = f", under the {MEANINGFUL:.0%} that counts as an improvement"
    return "no_better", f"The fine-tuned model is not meaningfully better than the base: {figures}{why})."


def _fewer_stops(base: dict[str, Any], tuned: dict[str, Any]) -> str | None:
    """A sentence when the tuned model's stop-rate interval lies wholly below the base model's."""
    base_ci, tuned_ci = base.get("stop_rate_ci95"), tuned.get("stop_rate_ci95")
    if not base_ci or not tuned_ci or tuned_ci[1] >= base_ci[0]:
        return None
    return (
        f"It ends fewer of its answers on its own, though: stop rate {base['stop_rate']:.0%} -> "
        f"{tuned['stop_rate']:.0%} ({tuned['stopped']}/{tuned['answers']})."
    )


def _setting(training: Any | None, key: str) -> Any:
    return getattr(training, key, None) if training is not None else None


def _not_better(training: Any | None) -> list[str]:
    """Too little change: more steps, larger steps, more examples."""
    steps, epochs = _setting(training, "max_steps"), _setting(training, "epochs")
    if steps:
        longer = (
            f"Train longer: training.max_steps is {steps}; raise it in forge.yaml "
            f"(or e.g. `forge train --max-steps {steps * 4}`)."
        )
    elif epochs:
        longer = f"Train longer: training.epochs is {epochs:g}; raise it in forge.yaml (or `forge ignite --epochs`)."
    else:
        longer = "Train longer: raise training.max_steps or training.epochs in forge.yaml."
    suggestions = [longer]
    budget = _setting(training, "time_budget_minutes")
    if budget:
        suggestions.append(
            f"Give training more time: training.time_budget_minutes is {budget:g}, and training stops when it is "
            "used up; raise it, then `forge plan` sizes max_steps to the new budget."
        )
    rate = _setting(training, "learning_rate")
    now = f" (now {rate:g}; try {rate * 2:g})" if rate else ""
    suggestions.append(f"Raise training.learning_rate{now}, so each step changes the model more.")
    suggestions.append("Add more training examples to your data file, then `forge prepare FILE` and `forge train`.")
    return suggestions


def _worse(training: Any | None) -> list[str]:
    """The model lost ground: steps too large, too many of them, or data that teaches the wrong thing."""
    rate = _setting(training, "learning_rate")
    now = f" (now {rate:g}; try {rate / 2:g})" if rate else ""
    return [
        f"Lower training.learning_rate{now}: too large a rate makes the model forget what it knew.",
        "Train for fewer steps, or keep training.early_stopping.enabled on, if the validation loss rose during "
        "training (`forge status` shows the runs).",
        "Check that the data's answers are what the model should say (`forge study FILE`) and that the chat "
        "template fits the model (`forge template`).",
    ]


# ---------------------------------------------------------------- the figures in words (report and CLI)


def stop_rate_text(side: dict[str, Any]) -> str:
    """One side's stop rate as people read it: 97% (62/64, 95% CI 89–99%); "–" without answers."""
    rate, count = side.get("stop_rate"), side.get("answers")
    if not isinstance(rate, (int, float)):
        return "–"
    if not count:  # an eval.json written before the counts were kept
        return f"{rate:.0%}"
    ci = f", {stop_interval_text(side)}" if side.get("stop_rate_ci95") else ""
    return f"{rate:.0%} ({side.get('stopped')}/{count}{ci})"


def stop_interval_text(side: dict[str, Any]) -> str:
    """The stop rate's interval as people read it: 95% CI 89–99% (empty without one)."""
    interval = side.get("stop_rate_ci95")
    return f"95% CI {interval[0] * 100:.0f}–{interval[1]:.0%}" if interval else ""


def loss_change_text(change: dict[str, Any] | None) -> str:
    """The paired change of the test loss in one sentence, or "" when there is none."""
    if not change or change.get("mean_difference") is None:
        return ""
    interval = change.get("ci95")
    ci = f", 95% CI {interval[0]:+.3f} to {interval[1]:+.3f}" if interval else ""
    threshold = change.get("changed_threshold", 0.01)
    return (
        f"Loss per example changed by {change['mean_difference']:+.3f} on average{ci} over "
        f"{change['examples']} examples: {change['examples_lower']} more than {threshold:.0%} lower, "
        f"{change['examples_higher']} more than {threshold:.0%} higher, {change['examples_unchanged']} "
        "about the same."
    )
