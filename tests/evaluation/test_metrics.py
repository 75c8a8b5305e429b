"""Answer metrics on hand-made strings, the choice of samples, and the length batching of the loss pass."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from forgellm.evaluation.loss import _batches, choose_examples
from forgellm.evaluation.metrics import Scorers, exact_match, normalize_answer, perplexity
from forgellm.evaluation.samples import pick_samples, split_conversation


@pytest.fixture(scope="module")
def scorers() -> Scorers:
    return Scorers.load()


def test_exact_match_folds_case_punctuation_width_and_spacing():
    assert normalize_answer("  The refund,\n  PLEASE! ") == "the refund please"
    assert exact_match("Your order #123 is on its way.", "your order 123 is on its way") == 1.0
    assert exact_match("ＡＢＣ", "abc") == 1.0  # full-width letters (NFKC)
    assert exact_match("Yes", "No") == 0.0
    assert exact_match("the order", "order") == 0.0  # words are never dropped, only punctuation and spacing


def test_rouge_l_known_values(scorers):
    # LCS of "the cat sat on the mat" / "the cat is on the mat" is 5 words of 6 each: P = R = F = 5/6.
    assert scorers.rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # 2 of 4 prediction words, 2 of 2 reference words: P = 1/2, R = 1, F = 2PR / (P + R) = 2/3.
    assert scorers.rouge_l("please cancel it now", "cancel it") == pytest.approx(2 / 3)
    assert scorers.rouge_l("yes", "no") == 0.0
    assert scorers.rouge_l("Café au lait!", "café au lait") == 1.0  # not only [a-z0-9]: accents count
    assert scorers.rouge_l("我爱北京", "我爱上海") == pytest.approx(0.5)  # one token per CJK character


def test_chrf_known_values(scorers):
    assert scorers.chrf("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(100.0)
    assert scorers.chrf("xyz", "abc") == 0.0
    assert scorers.chrf("the cat sat on the mat", "the cat is on the mat") == pytest.approx(64.5779, abs=1e-3)
    # One pair: pooled (corpus) chrF is the sentence chrF.
    assert scorers.corpus_chrf(["the cat sat"], ["the cat is"]) == pytest.approx(
        scorers.chrf("the cat sat", "the cat is")
    )
    assert scorers.corpus_chrf([], []) is None


def test_perplexity_is_exp_of_the_loss():
    assert perplexity(math.log(20.0)) == pytest.approx(20.0)
    assert perplexity(None) is None
    assert perplexity(1e6) is None  # past float range: missing, never inf in JSON


def test_split_conversation_cuts_before_the_last_answer():
    convo = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Refund?"},
        {"role": "assistant", "content": "Sure, here is how."},
    ]
    prompt, reference = split_conversation(convo)
    assert prompt == convo[:4] and reference == "Sure, here is how."
    assert split_conversation([{"role": "user", "content": "no answer"}]) is None
    assert split_conversation([{"role": "assistant", "content": "nothing asked"}]) is None
    assert split_conversation([{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]) is None
    assert split_conversation([{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]) is None
    assert split_conversation("not a list") is None


def test_pick_samples_is_seeded_keeps_file_order_and_skips_unusable_lines(tmp_path):
    path = tmp_path / "test.jsonl"
    lines = [
        json.dumps(
            {"line": n, "messages": [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}]}
        )
        for n in range(30)
    ]
    lines[3] = "{broken"
    lines[4] = json.dumps({"line": 4, "text": "pre-training text, no conversation"})
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    first, usable = pick_samples(path, 5, seed=7)
    again, _ = pick_samples(path, 5, seed=7)
    other, _ = pick_samples(path, 5, seed=8)
    assert usable == 28 and len(first) == 5
    assert [s.line for s in first] == [s.line for s in again] != [s.line for s in other]
    assert [s.line for s in first] == sorted(s.line for s in first)
    assert all(s.reference == f"a{s.line}" and s.prompt[-1]["content"] == f"q{s.line}" for s in first)
    everything, _ = pick_samples(path, 100, seed=7)
    assert [s.line for s in everything] == [n for n in range(30) if n not in (3, 4)]
    assert pick_samples(tmp_path / "missing.jsonl", 5, seed=7) == ([], 0)


def test_loss_batches_group_similar_lengths_under_the_token_budget():
    lengths = np.array([300, 20, 25, 2000, 22, 310, 21, 305])
    batches = _batches(lengths, budget=1024)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * lengths[batch].max() <= 1024
    padding = sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)
    assert padding <= 0.02 * lengths.sum()  # sorted by length: almost nothing is padding


def test_choose_examples_skips_examples_without_trained_tokens_and_is_seeded():
    # Three examples of 3 tokens; the second has no target (its only label is the first, never-predicted one).
    targets = np.array([-100, 5, 6, 7, -100, -100, -100, 8, 9], dtype=np.int32)
    offsets = np.array([0, 3, 6, 9])
    lengths = np.diff(offsets)
    assert choose_examples(lengths, targets, offsets, 10, seed=1).tolist() == [0, 2]
    picked = choose_examples(lengths, targets, offsets, 1, seed=1)
    assert len(picked) == 1 and picked.tolist() == choose_examples(lengths, targets, offsets, 1, seed=1).tolist()
