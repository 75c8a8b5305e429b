"""`forge eval`: the base model against a run's fine-tuned model on the held-out test split.

Loss and perplexity on the tokenized test split (the tokens training learns from), greedy answers to a
seeded sample of test conversations scored against their reference answers, the stop rate, and an
optional LLM judge. The base model is the same weights with the adapter switched off when the run
trained an adapter (one copy in memory), else forge.yaml's model loaded beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgellm.errors import ErrorCode, ForgeError
from forgellm.evaluation.general_check import GeneralCheck as _GeneralCheck
from forgellm.evaluation.judge import JudgeOutcome
from forgellm.evaluation.metrics import mean, perplexity
from forgellm.evaluation.result import EvalProgress, EvalResult
from forgellm.evaluation.samples import Sample, SampleResult, pick_samples
from forgellm.project.layout import PreparedLayout, ProjectLayout
from forgellm.project.lock import locked

if TYPE_CHECKING:
    from forgellm.config.schema import ForgeConfig
    from forgellm.project.run_record import RunRecord

if TYPE_CHECKING:
    from forgellm.inference.engines import TransformersEngine

METRICS = ("loss", "perplexity", "stop_rate", "exact_match", "rouge_l", "chrf")
REFERENCE_ANSWERS = 1000  # reference answers tokenized to size the answer token limit (a seeded sample)


def _as_progress(progress: EvalProgress | Callable[[str], None] | None) -> EvalProgress:
    if progress is None:
        return EvalProgress()
    return progress if isinstance(progress, EvalProgress) else EvalProgress(stage=progress)


def _test_split(prepared: Path, run_id: str) -> Any:
    """The run's tokenized test split; a clear error when prepare kept none."""
    from forgellm.training.data import load_split

    fix = (
        "Give the test split a share in forge.yaml (preprocessing.split.test, e.g. 0.05, with train + val + "
        "test adding up to 1.0), run `forge prepare FILE` again, and train on that data (`forge train`)."
    )
    if not prepared.is_dir():
        raise ForgeError(
            f"The prepared data run {run_id} trained on is gone ({prepared}).",
            fix="Run `forge prepare FILE` again with the same forge.yaml and data (it writes the same folder).",
            code=ErrorCode.PREPARED_DATA_MISSING,
        )
    if not PreparedLayout(prepared).split_parquet("test").is_file():
        raise ForgeError(
            f"The data run {run_id} trained on has no test split ({prepared}).",
            fix=fix,
            code=ErrorCode.PREPARED_DATA_MISSING,
        )
    split = load_split(prepared, "test")
    if len(split) == 0:
        raise ForgeError(
            f"The test split of the data run {run_id} trained on is empty ({prepared}).",
            fix=fix,
            code=ErrorCode.PREPARED_DATA_MISSING,
        )
    return split


def _timed(seconds: dict[str, float], key: str, started: float) -> float:
    now = time.perf_counter()
    seconds[key] = seconds.get(key, 0.0) + now - started
    return now


@dataclass
class _Target:
    """What is evaluated, found and checked before any model loads."""

    source: Any  # forgellm.export.source.ExportSource
    prepared: Path
    split: Any  # forgellm.training.data.TokenizedSplit of the test split
    config: Any  # forge.yaml's ForgeConfig
    warnings: list[str]


def _locate(project_dir: Path, config: Any, run: str | RunRecord | None) -> _Target:
    from forgellm.export.source import find_export_source
    from forgellm.project.run_record import RunSpec, run_status
    from forgellm.training.runs import list_runs

    if not list_runs(project_dir):
        raise ForgeError(
            "This project has no training run to evaluate.",
            fix="Train one with `forge train` (after `forge plan` and `forge prepare FILE`), or run everything "
            'with `forge ignite FILE "GOAL"`.',
            code=ErrorCode.NO_TRAINING_RUN,
        )
    source = find_export_source(project_dir, run)  # the run (as handed), its weights (best/ or last checkpoint)
    prepared = Path(RunSpec.load(source.run_dir).prepared_dir)  # the data the run trained on
    split = _test_split(prepared, source.run_id)
    warnings = []
    if run_status(source.run_dir) != "completed":
        warnings.append(f"Run {source.run_id} did not complete; its {source.checkpoint} weights were evaluated.")
    return _Target(source, prepared, split, config, warnings)


@locked("eval")  # a prepare or train meanwhile would change what is evaluated
def evaluate_run(
    layout: ProjectLayout,
    config: ForgeConfig,
    run: str | RunRecord | None = None,
    *,
    samples: int = 64,
    max_new_tokens: int | None = None,
    max_examples: int = 200,
    judge: bool | None = None,
    progress: EvalProgress | Callable[[str], None] | None = None,
    general: Path | None = None,
    forgetting: bool = True,
) -> EvalResult:
    """Evaluate ``run`` (its record as training handed it, its id or folder; default the newest completed run)
    against its base model and write
    reports/eval.json and reports/eval.html. ``judge``: None = when the advisor is an LLM, True = required.
    ``max_new_tokens``: None = sized by the test split's reference answers (see `answer_token_limit`).
    ``forgetting``: also score every model on a general held-out slice (``general``: a general data file
    to take it from when the prepared data has no general rows; see evaluation/forgetting.py)."""
    from forgellm.evaluation.judge import make_judge
    from forgellm.evaluation.metrics import Scorers
    from forgellm.evaluation.report import write_reports
    from forgellm.quiet import quiet_libraries

    project_dir = layout.root.resolve()
    report = _as_progress(progress)
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    target = _locate(project_dir, config, run)  # config: forge.yaml's (the advisor is the project's, not the run's)
    warnings = target.warnings
    judged_by, why_not = (
        (None, None) if judge is False else make_judge(project_dir, target.config.advisor, required=bool(judge))
    )
    warnings += [why_not] if why_not else []
    scorers = Scorers.load()  # before the models: a missing package fails in a second, not after minutes
    base, tuned = _open_engines(project_dir, target, report)
    clock = _timed(seconds, "load", started)

    seed = target.source.config.training.seed
    indices = _loss_examples(target.split, max_examples, seed)
    test_jsonl = PreparedLayout(target.prepared).split_jsonl("test")
    chosen, usable = pick_samples(test_jsonl, samples, seed)
    limit, limit_source, limit_reason = _answer_limit(test_jsonl, base, max_new_tokens, seed)
    measured = {}
    general_check = _GeneralCheck.start(target, base, general, seed, report) if forgetting else None
    with quiet_libraries():  # library deprecation notes would break the progress display, and mean nothing here
        for who, engine in (("base", base), ("fine-tuned", tuned)):  # every base pass first: see _merged
            with _merged(engine):
                measured[who] = _measure(engine, who, target, indices, chosen, limit, scorers, report, seconds)
                if general_check is not None:
                    general_check.score(who, engine)
    clock = time.perf_counter()
    losses = (measured["base"][0], measured["fine-tuned"][0])
    example_losses = _per_example(target.split, indices, *losses)
    results = _paired(chosen, measured["base"][1], measured["fine-tuned"][1], samples, warnings)
    outcome = None
    if judged_by is not None and results:
        report.stage(f"Judging {len(results)} answer pairs with {judged_by.client.model}")
        outcome = _judge(judged_by, results, seed, report)
        warnings += outcome.warnings
        _timed(seconds, "judge", clock)

    summary = _summary(losses, results, outcome, example_losses, scorers, warnings, target.source.config.training)
    summary["forgetting"] = general_check.result(target.source.config).to_dict() if general_check else None
    asked = {"samples": samples, "max_new_tokens": limit, "max_examples": max_examples, "judge": judge}
    asked |= {"max_new_tokens_source": limit_source, "max_new_tokens_reason": limit_reason}
    settings = _settings(asked, seed, target, usable, base, tuned)
    layout = ProjectLayout(project_dir)
    source = target.source
    result = EvalResult(
        source.run_id, source.checkpoint, source.config.model.ref, summary, settings, results, example_losses,
        outcome, warnings, outcome.notes if outcome is not None else [], seconds,
        {"json": layout.eval_json, "html": layout.eval_html},
    )  # fmt: skip
    report.stage("Writing reports/eval.json and reports/eval.html")
    seconds["total"] = time.perf_counter() - started
    write_reports(result)
    return result


def _settings(
    asked: dict[str, Any], seed: int, target: _Target, usable: int, base: TransformersEngine, tuned: TransformersEngine
) -> dict[str, Any]:
    """What was asked for and what was there: enough to reproduce the figures."""
    return {
        **asked,
        "judge": "auto" if asked["judge"] is None else asked["judge"],
        "seed": seed,
        "decoding": "greedy",
        "test_examples": len(target.split),
        "test_conversations": usable,
        "prepared_dir": str(target.prepared),
        "base_label": base.label,
        "tuned_label": tuned.label,
    }


def _paired(
    chosen: list[Sample], base: list[Any], tuned: list[Any], asked: int, warnings: list[str]
) -> list[SampleResult]:
    results = [SampleResult(s, b, t) for s, b, t in zip(chosen, base, tuned, strict=True)]
    if asked > 0 and not results:
        warnings.append(
            "The test split holds no conversation that ends with an assistant answer, so no answers "
            "were generated (continued pre-training data has none); loss and perplexity still count."
        )
    return results


def _answer_limit(test_file: Path, engine: TransformersEngine, asked: int | None, seed: int) -> tuple[int, str, str]:
    """(max_new_tokens, who chose it: user | references, why), the limit every answer is generated under."""
    from forgellm.evaluation.samples import answer_token_limit, reference_answers

    if asked is not None:
        return asked, "user", f"max_new_tokens {asked}: set by you (--max-new-tokens)"
    texts = reference_answers(test_file, REFERENCE_ANSWERS, seed)
    lengths = [len(ids) for ids in engine.tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    limit, why = answer_token_limit(lengths, engine.context)
    return limit, "references", why


def _summary(
    losses: Any, results: list[SampleResult], outcome: JudgeOutcome | None, example_losses: list[dict[str, Any]],
    scorers: Any, warnings: list[str], training: Any,
) -> dict[str, Any]:  # fmt: skip
    """The figures eval.json's readers (the export's model card, ignite, `forge status`) take: keys fixed,
    values or None; then how sure they are (loss_change, the stop rates' intervals) and the verdict."""
    from forgellm.evaluation.stats import paired_loss_change, relative_change
    from forgellm.evaluation.verdict import loss_verdict

    summary = {
        "base": _side(losses[0], [r.base for r in results], results, scorers),
        "tuned": _side(losses[1], [r.tuned for r in results], results, scorers),
        "judge_win_rate": outcome.win_rate if outcome is not None else None,
        "examples_scored": len(example_losses),
        "samples_generated": len(results),
    }
    for who in ("base", "tuned"):
        if summary[who]["loss"] is None:
            warnings.append(f"The {who} model's test loss is not a finite number: its weights may be broken.")
    base, tuned = summary["base"]["loss"], summary["tuned"]["loss"]
    change = paired_loss_change([e["base"] for e in example_losses], [e["tuned"] for e in example_losses])
    relative = relative_change(base, tuned)
    summary["loss_change"] = {"relative": relative, **change.to_dict()}
    summary["verdict"] = loss_verdict(base, tuned, relative, change, training, (summary["base"], summary["tuned"]))
    return summary


def _open_engines(
    project_dir: Path, target: _Target, report: EvalProgress
) -> tuple[TransformersEngine, TransformersEngine]:
    """(base, fine-tuned) TransformersEngines, through the same code `forge inference --compare` uses."""
    from forgellm.inference.engines import TransformersEngine
    from forgellm.inference.model_choice import open_compare_engines, source_choice

    report.stage(f"Loading run {target.source.run_id} and its base model")
    quiet = lambda _message: None  # noqa: E731
    choice = source_choice(target.source, project_dir, quiet)
    base, tuned = open_compare_engines(project_dir, choice, "transformers", quiet, config=target.config)
    # Losses need the torch model itself, which only the transformers engine (asked for above) holds.
    assert isinstance(base, TransformersEngine) and isinstance(tuned, TransformersEngine), "transformers was asked for"
    return base, tuned


@contextmanager
def _merged(engine: TransformersEngine) -> Iterator[None]:
    """The fine-tuned model with its LoRA merged into the weights: peft's extra matrix products on every call
    go away, so it runs at the base model's speed. Merged only after every base pass (the base view would
    unmerge it), and unmerged at the end, so the engine is left as it came."""
    model = engine.model
    if not (engine.has_adapter and engine.adapter_enabled and hasattr(model, "merge_adapter")):
        yield
        return
    model.merge_adapter()
    try:
        yield
    finally:
        model.unmerge_adapter()


def _loss_examples(split: Any, max_examples: int, seed: int) -> Any:
    from forgellm.evaluation.loss import choose_examples

    indices = choose_examples(split.lengths, split.targets, split.offsets, max_examples, seed)
    if len(indices) == 0:
        raise ForgeError(
            "No example of the test split has a token the model learns from (every label is masked).",
            fix="Check the chat template and the data (`forge template`), then `forge prepare FILE` again.",
            code=ErrorCode.NO_TRAINED_TOKENS,
            data={"split": "test"},
        )
    return indices


def _measure(
    engine: TransformersEngine, who: str, target: _Target, indices: Any, chosen: list[Sample], max_new_tokens: int,
    scorers: Any, report: EvalProgress, seconds: dict[str, float],
) -> tuple[Any, list[Any]]:  # fmt: skip
    """One model's test losses and its answers to the chosen samples (their times added to ``seconds``)."""
    from forgellm.evaluation.loss import score_losses
    from forgellm.evaluation.samples import answer_samples

    report.stage(f"Test loss of the {who} model on {len(indices)} examples")
    clock = time.perf_counter()
    losses = score_losses(engine, target.split, indices, advance=lambda d, t: report.advance("examples", d, t))
    clock = _timed(seconds, "loss", clock)
    if not chosen:
        return losses, []
    report.stage(f"Answers of the {who} model to {len(chosen)} held-out questions (≤{max_new_tokens} tokens each)")
    answers = answer_samples(
        engine, chosen, max_new_tokens=max_new_tokens, scorers=scorers,
        advance=lambda d, t: report.advance("answers", d, t),
    )  # fmt: skip
    _timed(seconds, "generate", clock)
    return losses, answers


def _per_example(split: Any, indices: Any, base: Any, tuned: Any) -> list[dict[str, Any]]:
    rows = zip(indices, split.lengths[indices], tuned.counts, base.per_example, tuned.per_example, strict=True)
    return [
        {"index": int(i), "tokens": int(n), "trained_tokens": int(c), "base": b, "tuned": t} for i, n, c, b, t in rows
    ]


def _judge(chosen: Any, results: list[SampleResult], seed: int, report: EvalProgress) -> JudgeOutcome:
    from forgellm.evaluation.judge import judge_samples

    return judge_samples(chosen, results, seed, advance=lambda d, t: report.advance("verdicts", d, t))


def _side(loss: Any, answers: list[Any], results: list[SampleResult], scorers: Any) -> dict[str, Any]:
    """One model's figures: loss over every scored token, answer metrics averaged over the samples, and
    the stop rate's count with its 95% Wilson interval."""
    from forgellm.evaluation.stats import wilson_interval

    mean_loss = loss.mean
    stopped = sum(1 for a in answers if a.stopped)
    interval = wilson_interval(stopped, len(answers))
    return {
        "loss": mean_loss,
        "perplexity": perplexity(mean_loss),
        "stop_rate": mean([float(a.stopped) for a in answers]),
        "exact_match": mean([a.scores["exact_match"] for a in answers]),
        "rouge_l": mean([a.scores["rouge_l"] for a in answers]),
        "chrf": scorers.corpus_chrf([a.text for a in answers], [r.sample.reference for r in results]),
        "stopped": stopped,
        "answers": len(answers),
        "stop_rate_ci95": list(interval) if interval is not None else None,
    }
