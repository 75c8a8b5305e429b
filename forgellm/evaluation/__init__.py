"""Held-out evaluation of a training run: base vs fine-tuned loss, answers, task metrics and a judge."""

from forgellm.evaluation.result import EvalProgress, EvalResult
from forgellm.evaluation.run import evaluate_run

__all__ = ["EvalProgress", "EvalResult", "evaluate_run"]
