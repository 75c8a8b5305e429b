"""`evaluate_run` on the tiny Llama with a real LoRA adapter: eval.json, losses, stop rate, the HTML page."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from evaluation.eval_support import RUN_ID, SMALL, build_project

from forgellm.evaluation import evaluate_run
from forgellm.evaluation.report import render_html
from forgellm.evaluation.run import METRICS


def test_eval_json_has_the_summary_the_export_reads(evaluated):
    root, result = evaluated
    data = json.loads((root / "reports" / "eval.json").read_text(encoding="utf-8"))
    assert data == json.loads(json.dumps(result.to_dict()))
    assert data["run_id"] == RUN_ID and data["checkpoint"] == "best"
    summary = data["summary"]
    assert set(summary) == {"base", "tuned", "judge_win_rate", "examples_scored", "samples_generated"}
    assert set(summary["base"]) == set(summary["tuned"]) == set(METRICS)
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
    assert not list((root / "reports").glob(".*.tmp"))  # atomic writes leave no temp files


def test_batched_losses_equal_a_plain_forward_of_each_example(evaluated):
    """Sorting, batching and padding change nothing: each example alone, unpadded, gives the same loss."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from forgellm.training.data import load_split
    from forgellm.training.protocol import RunSpec

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
    stopped = evaluate_run(root, samples=2, max_new_tokens=8, max_examples=2)
    for side in ("base", "tuned"):
        assert all(getattr(r, side).stopped and getattr(r, side).tokens == 1 for r in stopped.examples)
        assert stopped.summary[side]["stop_rate"] == 1.0
    assert [e["tuned_stopped"] for e in stopped.to_dict()["examples"]] == [True, True]


def test_batched_answers_are_the_engines_own_answers(evaluated, stopper_model_dir):
    """Several prompts per forward pass (left-padded) write what the engine writes one prompt at a time."""
    from forgellm.evaluation.batched import generate_batch
    from forgellm.evaluation.run import EvalProgress, _open_engines
    from forgellm.serve.engines import TransformersEngine, generate

    root, result = evaluated
    conversations = [r.sample.prompt for r in result.examples] + [[{"role": "user", "content": "Hi"}]]
    base, tuned = _open_engines(root, RUN_ID, EvalProgress())
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
