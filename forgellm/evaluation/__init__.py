"""Held-out evaluation of a training run: base vs fine-tuned loss, answers, task metrics and a judge."""

from forgellm.evaluation.run import EvalProgress, EvalResult, evaluate_run

__all__ = ["EvalProgress", "EvalResult", "evaluate_run"]
