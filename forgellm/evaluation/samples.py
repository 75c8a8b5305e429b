"""Side-by-side answers: held-out conversations, cut before their last assistant turn, answered greedily
by the base and the fine-tuned model, and scored against the answer the data holds."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Message = dict[str, str]


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


def pick_samples(path: Path, count: int, seed: int) -> tuple[list[Sample], int]:
    """(``count`` conversations chosen at random with ``seed``, how many usable ones the file holds).

    Reservoir sampling: one pass, memory for ``count`` samples only, the same choice for the same file
    and seed; the chosen ones keep their file order.
    """
    rng = random.Random(seed)
    chosen: list[tuple[int, Sample]] = []
    usable = 0
    if count <= 0 or not path.is_file():
        return [], 0
    for record in _records(path):
        parts = split_conversation(record.get("messages"))
        if parts is None:
            continue
        line = record.get("line") if isinstance(record.get("line"), int) else None
        if len(chosen) < count:
            chosen.append((usable, Sample(line, *parts)))
        else:
            slot = rng.randrange(usable + 1)
            if slot < count:
                chosen[slot] = (usable, Sample(line, *parts))
        usable += 1
    return [sample for _, sample in sorted(chosen, key=lambda item: item[0])], usable


def answer_samples(
    engine: Any, samples: list[Sample], *, max_new_tokens: int, scorers: Any, advance: Callable[[int, int], None]
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
