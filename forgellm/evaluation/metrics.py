"""Task metrics of a generated answer against its reference: exact match, ROUGE-L and chrF.

ROUGE-L comes from Google's `rouge-score` package and chrF from `sacrebleu`, so the figures mean what
they mean in papers. Both are imported only when answers are scored.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from forgellm.errors import ErrorCode, ForgeError

_METRICS_FIX = "Install them with: pip install rouge-score sacrebleu"
# Scripts written without spaces between words: one token per character, as ROUGE does for Chinese.
_UNSPACED = r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"
_TOKEN = re.compile(rf"{_UNSPACED}|[^\W_]+", re.UNICODE)


def normalize_answer(text: str) -> str:
    """Case, width, punctuation and spacing folded away: "The refund, please!" == "the refund please"."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(" " if unicodedata.category(ch).startswith(("P", "S")) else ch for ch in folded)
    return " ".join(kept.split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the answers are equal after `normalize_answer`, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


class _UnicodeTokenizer:
    """rouge-score's own tokenizer keeps only [a-z0-9]: every non-English answer would score 0."""

    def tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


@dataclass
class Scorers:
    """The metric objects, built once per evaluation (rouge-score's import takes seconds)."""

    rouge_scorer: Any
    chrf_scorer: Any

    @classmethod
    def load(cls) -> Scorers:
        try:
            from rouge_score import rouge_scorer
            from sacrebleu.metrics import CHRF
        except ImportError as exc:
            raise ForgeError(
                f"`forge eval` scores answers with the rouge-score and sacrebleu packages; {exc.name} is missing.",
                fix=_METRICS_FIX,
                code=ErrorCode.DEPENDENCY_MISSING, data={"package": exc.name},
            ) from None
        return cls(rouge_scorer.RougeScorer(["rougeL"], tokenizer=_UnicodeTokenizer()), CHRF())

    def rouge_l(self, prediction: str, reference: str) -> float:
        """ROUGE-L F-measure (longest common subsequence of words), 0..1."""
        return float(self.rouge_scorer.score(reference, prediction)["rougeL"].fmeasure)

    def chrf(self, prediction: str, reference: str) -> float:
        """Sentence chrF (character n-gram F-score, beta 2), 0..100 as sacrebleu reports it."""
        return float(self.chrf_scorer.sentence_score(prediction, [reference]).score)

    def corpus_chrf(self, predictions: Sequence[str], references: Sequence[str]) -> float | None:
        """chrF over all answers at once (n-gram statistics pooled), the figure sacrebleu's CLI reports."""
        if not predictions:
            return None
        return float(self.chrf_scorer.corpus_score(list(predictions), [list(references)]).score)

    def score(self, prediction: str, reference: str) -> dict[str, float]:
        return {
            "exact_match": exact_match(prediction, reference),
            "rouge_l": self.rouge_l(prediction, reference),
            "chrf": self.chrf(prediction, reference),
        }


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def perplexity(loss: float | None) -> float | None:
    """exp(mean token loss); None when there was nothing to score or it is past float range (JSON has no inf)."""
    if loss is None:
        return None
    try:
        return math.exp(loss)
    except OverflowError:
        return None
