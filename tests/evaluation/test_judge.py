"""The LLM judge against a real local OpenAI-compatible server: position randomised and undone, verdicts
cached, and every kind of failure a warning, never a failed evaluation."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from advisor.servers import Reply, fast_retries, openai_server  # noqa: F401 - fast_retries is a fixture
from evaluation.eval_support import RUN_ID
from stage_support import staged
from typer.testing import CliRunner

from forgellm.advisor.cache import AdvisorCache
from forgellm.advisor.openai_compat import OpenAICompatClient
from forgellm.advisor.retry import Backoff
from forgellm.cli.main import app
from forgellm.config.io import load_config, save_config
from forgellm.evaluation import evaluate_run
from forgellm.evaluation.judge import Judge, judge_samples
from forgellm.evaluation.samples import Answer, Sample, SampleResult

FAST = Backoff(base_seconds=0.001, cap_seconds=0.01)
_ANSWER = re.compile(r"<answer_([AB])>(.*?)</answer_\1>", re.S)


def _results(count: int) -> list[SampleResult]:
    return [
        SampleResult(
            Sample(n, [{"role": "user", "content": f"question {n}"}], f"reference {n}"),
            Answer(f"base answer {n}", True, 5, 0.1),
            Answer(f"tuned answer {n}", True, 5, 0.1),
        )
        for n in range(count)
    ]


def _shown(request) -> dict[str, str]:
    """{'A': text, 'B': text} of the answers one judge request showed."""
    prompt = request.json["messages"][1]["content"]
    return dict(_ANSWER.findall(prompt))


def _client(server) -> OpenAICompatClient:
    return OpenAICompatClient(base_url=server.url, model="judge-model", backoff=FAST, max_retries=1)


def test_the_answer_order_is_random_per_sample_and_undone_before_counting():
    results = _results(10)
    # A judge that always prefers the first answer it sees: it must not favour either model.
    with openai_server([Reply.json({"winner": "A", "reason": "The first one."})]) as server:
        outcome = judge_samples(Judge(_client(server)), results, seed=3, advance=lambda *_: None)
    positions = [r.judge["tuned_position"] for r in results]
    assert set(positions) == {"A", "B"}  # both orders occur
    for result, request in zip(results, server.requests, strict=True):
        shown = _shown(request)
        tuned_at = result.judge["tuned_position"]
        assert shown[tuned_at] == result.tuned.text and shown["B" if tuned_at == "A" else "A"] == result.base.text
        assert result.judge["winner"] == ("tuned" if tuned_at == "A" else "base")
    assert outcome.judged == 10 and outcome.ties == 0
    assert outcome.tuned_wins == positions.count("A") and outcome.base_wins == positions.count("B")
    assert outcome.win_rate == pytest.approx(positions.count("A") / 10)
    # The same seed draws the same order: re-running an evaluation asks the same questions.
    again = _results(10)
    with openai_server([Reply.json({"winner": "tie", "reason": "Equal."})]) as server:
        tied = judge_samples(Judge(_client(server)), again, seed=3, advance=lambda *_: None)
    assert [r.judge["tuned_position"] for r in again] == positions
    assert tied.win_rate == 0.5 and tied.ties == 10  # a tie counts half


def test_verdicts_are_cached_and_identical_answers_are_a_tie_without_asking(tmp_path):
    results = _results(3)
    results[2].tuned = Answer(results[2].base.text, True, 5, 0.1)
    cache = AdvisorCache(tmp_path / "cache")
    with openai_server([Reply.json({"winner": "B", "reason": "Better."})]) as server:
        first = judge_samples(Judge(_client(server), cache), results, seed=1, advance=lambda *_: None)
        second = judge_samples(Judge(_client(server), cache), _results(3)[:2], seed=1, advance=lambda *_: None)
    assert len(server.requests) == 2  # two differing pairs asked once; the second run came from the cache
    assert results[2].judge == {"winner": "tie", "reason": "Both answers are identical.", "tuned_position": "A"}
    assert first.judged == 3 and second.judged == 2 and second.notes == []
    assert "Sent 2 held-out conversation(s)" in first.notes[0]


def test_an_unusable_answer_costs_one_sample_and_an_unreachable_judge_is_a_warning():
    script = [
        Reply.json("not json at all"),
        Reply.json({"winner": "C", "reason": "?"}),
        Reply.json({"winner": "B", "reason": "ok"}),
    ]
    with openai_server(script) as server:
        outcome = judge_samples(Judge(_client(server)), _results(3), seed=2, advance=lambda *_: None)
    assert outcome.judged == 1 and outcome.win_rate in (0.0, 1.0)
    assert outcome.warnings == ["The LLM judge gave 2 unusable answer(s); those samples were not judged."]

    with openai_server([Reply.status(500)]) as server:
        down = judge_samples(Judge(_client(server)), _results(4), seed=2, advance=lambda *_: None)
    assert down.judged == 0 and down.win_rate is None and len(server.requests) == 2  # one try + one retry, once
    assert down.warnings[0].startswith("The LLM judge was skipped after 0 sample(s): The OpenAI-compatible server")


def _with_openai_advisor(project, tmp_path, url: str):
    copy = tmp_path / "project"
    shutil.copytree(project, copy)
    config = load_config(copy / "forge.yaml").config
    config.advisor.provider, config.advisor.base_url, config.advisor.model = "openai", url, "judge-model"
    save_config(config, copy / "forge.yaml")
    return copy


def test_forge_eval_json_reports_the_judge_win_rate(eval_project, tmp_path, fast_retries):  # noqa: F811
    verdicts = ["A", "B", "tie", "A"]
    with openai_server([Reply.json({"winner": w, "reason": f"verdict {w}"}) for w in verdicts]) as server:
        root = _with_openai_advisor(eval_project, tmp_path, server.url)
        args = ["eval", "-C", str(root), "--json", "--samples", "4", "--max-new-tokens", "6", "--max-examples", "4"]
        outcome = CliRunner().invoke(app, args)
    assert outcome.exit_code == 0, outcome.output[-3000:]
    data = json.loads(outcome.stdout)
    assert data == json.loads((root / "reports" / "eval.json").read_text(encoding="utf-8"))
    asked = [e for e in data["examples"] if e["judge"]["reason"] != "Both answers are identical."]
    assert len(asked) == len(server.requests) >= 2
    for example, request, letter in zip(asked, server.requests, verdicts, strict=False):
        position = example["judge"]["tuned_position"]
        assert _shown(request)[position].strip() == example["tuned"]
        expected = "tie" if letter == "tie" else ("tuned" if letter == position else "base")
        assert example["judge"]["winner"] == expected
    wins = sum(
        1.0 if e["judge"]["winner"] == "tuned" else 0.5 if e["judge"]["winner"] == "tie" else 0.0
        for e in data["examples"]
    )
    assert data["summary"]["judge_win_rate"] == pytest.approx(wins / 4)
    assert data["judge"]["judged"] == 4 and data["judge"]["model"] == "judge-model"
    assert any("for judging" in note for note in data["notes"])


def test_a_judge_that_rejects_the_key_is_skipped_with_a_warning(eval_project, tmp_path, fast_retries):  # noqa: F811
    with openai_server([Reply.key_invalid()]) as server:
        root = _with_openai_advisor(eval_project, tmp_path, server.url)
        result = evaluate_run(*staged(root), samples=2, max_new_tokens=6, max_examples=2)
    assert result.run_id == RUN_ID and result.summary["judge_win_rate"] is None
    assert result.summary["tuned"]["loss"] is not None  # everything else was measured
    assert any(w.startswith("The LLM judge was skipped") and "HTTP 401" in w for w in result.warnings)
