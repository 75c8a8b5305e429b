"""`evaluate_run` on the tiny Llama with a real LoRA adapter: eval.json, losses, stop rate, the HTML page."""

from __future__ import annotations

import json
import math
from html import escape

import numpy as np
import pytest
from evaluation.eval_support import RUN_ID, SMALL, build_project
from stage_support import staged

from forgellm.evaluation import evaluate_run
from forgellm.evaluation.report import render_html
from forgellm.evaluation.run import METRICS
from forgellm.evaluation.stats import wilson_interval
from forgellm.evaluation.verdict import stop_rate_text


def test_eval_json_has_the_summary_the_export_reads(evaluated):
    root, result = evaluated
    data = json.loads((root / "reports" / "eval.json").read_text(encoding="utf-8"))
    assert data == json.loads(json.dumps(result.to_dict()))
    assert data["run_id"] == RUN_ID and data["checkpoint"] == "best"
    summary = data["summary"]
    # The keys the model card, ignite and `forge status` read stay; how sure they are and the verdict are added.
    assert set(summary) == {
        "base", "tuned", "judge_win_rate", "examples_scored", "samples_generated", "loss_change", "verdict",
        "forgetting",
    }  # fmt: skip
    assert set(summary["base"]) == set(summary["tuned"]) == {*METRICS, "stopped", "answers", "stop_rate_ci95"}
    for side in ("base", "tuned"):
        figures = summary[side]
        assert 0 < figures["loss"] < 20 and figures["perplexity"] == pytest.approx(math.exp(figures["loss"]))
        for share in ("stop_rate", "exact_match", "rouge_l"):
            assert 0.0 <= figures[share] <= 1.0
        assert 0.0 <= figures["chrf"] <= 100.0
    assert summary["tuned"]["loss"] != pytest.approx(summary["base"]["loss"], abs=1e-3)  # the adapter matters
    assert summary["judge_win_rate"] is None  # the project's advisor is the offline rules: no judge, no warning
    settings = data["settings"]
    assert (
        summary["examples_scored"]
        == min(SMALL["max_examples"], settings["test_examples"])
        == len(data["example_losses"])
    )
    assert summary["samples_generated"] == SMALL["samples"] == len(data["examples"])
    for side in ("base", "tuned"):  # the stop rate's count and 95% Wilson interval
        figures = summary[side]
        assert figures["answers"] == SMALL["samples"] and figures["stopped"] / SMALL["samples"] == figures["stop_rate"]
        assert figures["stop_rate_ci95"] == pytest.approx(list(wilson_interval(figures["stopped"], SMALL["samples"])))
    change = summary["loss_change"]  # the paired change of the loss per example, and the relative one
    differences = [e["tuned"] - e["base"] for e in data["example_losses"]]
    assert change["examples"] == len(differences) and change["mean_difference"] == pytest.approx(np.mean(differences))
    assert change["ci95"][0] < change["mean_difference"] < change["ci95"][1]
    assert change["relative"] == pytest.approx(summary["tuned"]["loss"] / summary["base"]["loss"] - 1)
    assert summary["verdict"]["status"] in ("better", "no_better", "worse") and summary["verdict"]["message"]
    assert (settings["max_new_tokens"], settings["max_new_tokens_source"]) == (SMALL["max_new_tokens"], "user")
    assert settings["max_new_tokens_reason"] == "max_new_tokens 8: set by you (--max-new-tokens)"
    example = data["examples"][0]
    for key in ("prompt", "question", "reference", "base", "tuned", "base_stopped", "tuned_stopped"):
        assert key in example
    assert example["prompt"][-1]["role"] == "user" and example["reference"]
    # The summary loss is the mean over trained tokens: the per-example losses weighted by their token counts.
    for side in ("base", "tuned"):
        pairs = [(e[side], e["trained_tokens"]) for e in data["example_losses"]]
        weighted = sum(loss * count for loss, count in pairs) / sum(count for _, count in pairs)
        assert weighted == pytest.approx(summary[side]["loss"])
    html = (root / "reports" / "eval.html").read_text(encoding="utf-8")
    assert html.count("<svg") == 3 and "Answers side by side" in html and RUN_ID in html
    verdict_at = html.index(escape(summary["verdict"]["message"]))
    assert verdict_at < html.index("<h2>Summary</h2>")  # the verdict comes first, in words
    assert "examples have a lower loss" not in html and "about the same" in html
    assert escape(stop_rate_text(summary["base"])) in html and "max_new_tokens 8: set by you" in html
    assert not list((root / "reports").glob(".*.tmp"))  # atomic writes leave no temp files


def test_batched_losses_equal_a_plain_forward_of_each_example(evaluated):
    """Sorting, batching and padding change nothing: each example alone, unpadded, gives the same loss."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from forgellm.project.run_record import RunSpec
    from forgellm.training.data import load_split

    root, result = evaluated
    spec = RunSpec.load(root / "runs" / RUN_ID)
    split = load_split(__import__("pathlib").Path(spec.prepared_dir), "test")
    model = AutoModelForCausalLM.from_pretrained(spec.model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(root / "runs" / RUN_ID / "best")).eval()
    for entry in result.example_losses[:4]:
        ids, labels = (torch.from_numpy(np.asarray(a, dtype=np.int64))[None] for a in split.example(entry["index"]))
        with torch.inference_mode():
            tuned = model(input_ids=ids, labels=labels).loss.item()
            with model.disable_adapter():
                base = model(input_ids=ids, labels=labels).loss.item()
        assert entry["tuned"] == pytest.approx(tuned, rel=1e-4) and entry["base"] == pytest.approx(base, rel=1e-4)


def test_stop_rate_counts_answers_that_end_their_turn(evaluated, tmp_path, stopper_model_dir, _support_csv):
    _, result = evaluated
    summary = result.to_dict()["summary"]
    for side in ("base", "tuned"):  # the random tiny model rambles: every answer is cut at the token limit
        answers = [getattr(r, side) for r in result.examples]
        assert all(a.tokens == SMALL["max_new_tokens"] and not a.stopped for a in answers)
        assert summary[side]["stop_rate"] == 0.0
    # A model that ends its turn at once: every real generation stops after one token.
    root = build_project(tmp_path / "stopper", stopper_model_dir, _support_csv, strong_adapter=False)
    stopped = evaluate_run(*staged(root), samples=2, max_new_tokens=8, max_examples=2)
    for side in ("base", "tuned"):
        assert all(getattr(r, side).stopped and getattr(r, side).tokens == 1 for r in stopped.examples)
        assert stopped.summary[side]["stop_rate"] == 1.0
    assert [e["tuned_stopped"] for e in stopped.to_dict()["examples"]] == [True, True]


def test_batched_answers_are_the_engines_own_answers(evaluated, stopper_model_dir):
    """Several prompts per forward pass (left-padded) write what the engine writes one prompt at a time."""
    from forgellm.evaluation.batched import generate_batch
    from forgellm.evaluation.run import EvalProgress, _locate, _open_engines
    from forgellm.inference.engines import TransformersEngine, generate

    root, result = evaluated
    conversations = [r.sample.prompt for r in result.examples] + [[{"role": "user", "content": "Hi"}]]
    base, tuned = _open_engines(root, _locate(root, staged(root)[1], RUN_ID), EvalProgress())
    stopper = TransformersEngine.load(stopper_model_dir, base.tokenizer, base.chat_format, "stopper")
    for engine in (base, tuned, stopper):
        one_by_one = [generate(engine, c, max_new_tokens=10) for c in conversations]
        finished = []
        batched = generate_batch(engine, conversations, 10, batch_size=3, on_done=finished.append)
        assert [(g.text, g.tokens, g.stopped_at_end_of_turn) for g in batched] == [
            (g.text, g.tokens, g.stopped_at_end_of_turn) for g in one_by_one
        ]
        assert finished == [1, 2, 3, 4]  # counted across batches as answers finish
    assert all(g.stopped_at_end_of_turn for g in generate_batch(stopper, conversations, 10))


def test_html_keeps_model_output_as_text(evaluated):
    _, result = evaluated
    data = json.loads(json.dumps(result.to_dict()))
    attack = "<script>alert('pwned')</script><img src=x onerror=alert(1)>"
    example = data["examples"][0]
    example["tuned"] = f"Sure! {attack}"
    example["base"] = attack
    example["reference"] = attack
    example["prompt"][-1]["content"] = attack
    example["judge"] = {"winner": "tuned", "reason": attack, "tuned_position": "A"}
    data["warnings"] = [attack]
    html = render_html(data)
    assert "<script" not in html.lower() and "<img" not in html.lower()
    assert "Sure! &lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in html
    assert html.count("&lt;script&gt;") == 6  # tuned, base, reference, prompt, judge reason, warning


def _reference_lengths(prepared, tokenizer) -> list[int]:
    """Token counts of the last assistant turn of every test conversation, read straight from test.jsonl."""
    lengths = []
    for line in (prepared / "test.jsonl").read_text(encoding="utf-8").splitlines():
        turns = json.loads(line).get("messages") or []
        answers = [t["content"] for t in turns if t.get("role") == "assistant" and t.get("content", "").strip()]
        if answers and turns[-1].get("role") == "assistant":
            lengths.append(len(tokenizer(answers[-1], add_special_tokens=False)["input_ids"]))
    return lengths


def test_the_answer_limit_is_sized_by_the_reference_answers_and_nothing_warns(eval_project, tmp_path):
    import shutil
    import warnings

    from transformers import AutoTokenizer

    from forgellm.project.run_record import RunSpec

    root = tmp_path / "project"
    shutil.copytree(eval_project, root)
    spec = RunSpec.load(root / "runs" / RUN_ID)
    lengths = _reference_lengths(
        __import__("pathlib").Path(spec.prepared_dir), AutoTokenizer.from_pretrained(spec.model_dir)
    )
    p95 = math.ceil(float(np.percentile(lengths, 95)))
    expected = min(512, max(64, math.ceil(p95 * 1.25 / 16) * 16))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_run(*staged(root), samples=2, max_examples=2)  # max_new_tokens left to the references
    assert [str(w.message) for w in caught] == []  # loading, loss and generation: no library note reaches the user
    settings = result.settings
    assert settings["max_new_tokens"] == expected and settings["max_new_tokens_source"] == "references"
    assert settings["max_new_tokens_reason"] == (
        f"max_new_tokens {expected}: 1.25 x the p95 ({p95} tokens) of the {len(lengths)} reference answers "
        "(at least 64), so an answer as long as the data's has room to end its turn; one still going at the limit "
        "is longer than them"
    )
    for side in ("base", "tuned"):  # the random tiny model never ends its turn: it runs to the sized limit
        assert all(getattr(r, side).tokens == expected and not getattr(r, side).stopped for r in result.examples)


def test_library_warnings_during_generation_are_kept_off_the_terminal(evaluated, monkeypatch, capfd):
    """With the KV cache passed by its old name, this transformers warns (a FutureWarning and a logged note);
    the guard around generation keeps both away from the user and leaves every setting as it was."""
    import warnings

    import torch
    from transformers.utils import logging as hf_logging

    from forgellm.evaluation import batched
    from forgellm.evaluation.run import EvalProgress, _locate, _open_engines

    root, result = evaluated
    base, tuned = _open_engines(root, _locate(root, staged(root)[1], RUN_ID), EvalProgress())
    renamed = batched.cache_keyword(tuned.model) == "cache"
    monkeypatch.setattr(batched, "cache_keyword", lambda _model: "past_key_values")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()  # as a user's environment may have it
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            filters = list(warnings.filters)
            if renamed:  # the check has teeth: unguarded, the old name warns on this version
                tuned.model(input_ids=torch.tensor([[1, 2, 3]]), past_key_values=None, use_cache=True)
                assert any(issubclass(w.category, FutureWarning) for w in caught)
                caught.clear()
            capfd.readouterr()
            for engine in (base, tuned):
                answers = batched.generate_batch(engine, [r.sample.prompt for r in result.examples], 6)
                assert [a.tokens for a in answers] == [6] * len(result.examples)
            assert [str(w.message) for w in caught] == [] and warnings.filters == filters
        assert "deprecated" not in capfd.readouterr().err
        assert hf_logging.get_verbosity() == hf_logging.WARNING  # restored after generation
    finally:
        hf_logging.set_verbosity(verbosity)
