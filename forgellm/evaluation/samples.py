"""Side-by-side answers: held-out conversations, cut before their last assistant turn, answered greedily
by the base and the fine-tuned model, and scored against the answer the data holds."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forgellm.inference.engines import TransformersEngine

Message = dict[str, str]
# The answer token limit computed from the reference answers (see answer_token_limit).
ANSWER_ROOM = 1.25  # room above the long answers of the data: a model's wording differs from the reference
MIN_ANSWER_TOKENS = 64
MAX_ANSWER_TOKENS = 512  # generation time grows with it; longer answers are rare in chat data
DEFAULT_ANSWER_TOKENS = 128  # when there is no reference answer to go by


@dataclass
class Sample:
    """One held-out conversation: what the model is shown and the answer the data holds."""

    line: int | None  # line of the input file it came from (prepare keeps it), for finding it again
    prompt: list[Message]  # the conversation up to (without) the last assistant turn
    reference: str


@dataclass
class Answer:
    text: str
    stopped: bool  # ended its turn itself, before the token limit
    tokens: int
    seconds: float
    scores: dict[str, float] = field(default_factory=dict)  # exact_match, rouge_l, chrf (when there is a reference)


@dataclass
class SampleResult:
    sample: Sample
    base: Answer
    tuned: Answer
    judge: dict[str, Any] | None = None  # winner (base | tuned | tie), reason, tuned_position (A | B)

    @property
    def question(self) -> str:
        """The last user turn: what a person would call the question."""
        return next((m["content"] for m in reversed(self.sample.prompt) if m.get("role") == "user"), "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "line": self.sample.line,
            "prompt": self.sample.prompt,
            "question": self.question,
            "reference": self.sample.reference,
            "base": self.base.text,
            "tuned": self.tuned.text,
            "base_stopped": self.base.stopped,
            "tuned_stopped": self.tuned.stopped,
            "base_tokens": self.base.tokens,
            "tuned_tokens": self.tuned.tokens,
            "scores": {"base": self.base.scores, "tuned": self.tuned.scores},
            "judge": self.judge,
        }


def split_conversation(messages: Any) -> tuple[list[Message], str] | None:
    """(prompt, reference): everything before the last assistant turn, and that turn's text.
    None when there is no assistant answer with text after at least one other turn."""
    if not isinstance(messages, list):
        return None
    turns = [m for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str)]
    last = next((i for i in range(len(turns) - 1, -1, -1) if turns[i].get("role") == "assistant"), None)
    if last is None or last == 0 or not turns[last]["content"].strip():  # nothing to answer, or no answer
        return None
    prompt = [{"role": str(m["role"]), "content": m["content"]} for m in turns[:last]]
    return (prompt, turns[last]["content"]) if any(m["role"] != "system" for m in prompt) else None


def _records(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # prepare writes whole lines; a damaged one is not worth failing the evaluation
            if isinstance(record, dict):
                yield record


def _reservoir(items: Iterator[Any], count: int, seed: int) -> tuple[list[Any], int]:
    """(``count`` items chosen at random with ``seed``, in their original order; how many there were).
    One pass, memory for ``count`` items only, the same choice for the same items and seed."""
    rng = random.Random(seed)
    chosen: list[tuple[int, Any]] = []
    seen = 0
    for item in items:
        if len(chosen) < count:
            chosen.append((seen, item))
        else:
            slot = rng.randrange(seen + 1)
            if slot < count:
                chosen[slot] = (seen, item)
        seen += 1
    return [item for _, item in sorted(chosen, key=lambda pair: pair[0])], seen


def _usable(path: Path) -> Iterator[Sample]:
    for record in _records(path):
        parts = split_conversation(record.get("messages"))
        if parts is not None:
            yield Sample(record.get("line") if isinstance(record.get("line"), int) else None, *parts)


def pick_samples(path: Path, count: int, seed: int) -> tuple[list[Sample], int]:
    """(``count`` conversations chosen at random with ``seed``, how many usable ones the file holds);
    the chosen ones keep their file order."""
    if count <= 0 or not path.is_file():
        return [], 0
    return _reservoir(_usable(path), count, seed)


def reference_answers(path: Path, count: int, seed: int) -> list[str]:
    """The reference answers of at most ``count`` usable conversations (a seeded choice): enough to know
    how long the data's answers are without tokenizing a whole large test split."""
    if count <= 0 or not path.is_file():
        return []
    return [sample.reference for sample in _reservoir(_usable(path), count, seed)[0]]


def answer_token_limit(reference_tokens: list[int], context: int = 0) -> tuple[int, str]:
    """(max_new_tokens, why) for answers to the test conversations: ANSWER_ROOM x the 95th percentile of
    the reference answers' lengths in tokens, rounded up to a multiple of 16, within
    [MIN_ANSWER_TOKENS, MAX_ANSWER_TOKENS] and the model's context. A limit under the answers' own
    lengths cuts them before they can end, and the stop rate would then measure the limit, not the model."""
    import numpy as np

    if not reference_tokens:
        return DEFAULT_ANSWER_TOKENS, (
            f"max_new_tokens {DEFAULT_ANSWER_TOKENS}: the test split holds no reference answer to size it by"
        )
    p95 = math.ceil(float(np.percentile(reference_tokens, 95)))
    wanted = max(MIN_ANSWER_TOKENS, math.ceil(p95 * ANSWER_ROOM / 16) * 16)
    cap = min(MAX_ANSWER_TOKENS, context) if context else MAX_ANSWER_TOKENS
    basis = f"the p95 ({p95} tokens) of the {len(reference_tokens)} reference answers"
    if wanted <= cap:
        return wanted, (
            f"max_new_tokens {wanted}: {ANSWER_ROOM:g} x {basis} (at least {MIN_ANSWER_TOKENS}), so an answer "
            "as long as the data's has room to end its turn; one still going at the limit is longer than them"
        )
    return cap, (
        f"max_new_tokens {cap}: capped (at {cap}) below {ANSWER_ROOM:g} x {basis}; some answers may be cut "
        "before they can end, which lowers the stop rate of both models alike"
    )


def answer_samples(
    engine: TransformersEngine,
    samples: list[Sample],
    *,
    max_new_tokens: int,
    scorers: Any,
    advance: Callable[[int, int], None],
) -> list[Answer]:
    """Greedy answers of one model to every sample, scored against the references; ``advance(done, total)``."""
    from forgellm.evaluation.batched import generate_batch

    advance(0, len(samples))
    generations = generate_batch(
        engine, [s.prompt for s in samples], max_new_tokens, on_done=lambda done: advance(done, len(samples))
    )
    answers = []
    for sample, generation in zip(samples, generations, strict=True):
        text = generation.text.strip()
        scores = scorers.score(text, sample.reference)
        answers.append(Answer(text, generation.stopped_at_end_of_turn, generation.tokens, generation.seconds, scores))
    return answers
