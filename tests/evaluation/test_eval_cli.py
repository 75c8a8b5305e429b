"""`forge eval` as a user runs it: the table, the example, the report path, and clear errors."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest
from evaluation.eval_support import RUN_ID, build_project
from stage_support import staged
from typer.testing import CliRunner

from forgellm.cli.main import app
from forgellm.errors import ForgeError
from forgellm.evaluation import evaluate_run
from forgellm.evaluation.verdict import stop_interval_text

runner = CliRunner()


def test_forge_eval_shows_base_against_fine_tuned_and_where_the_report_is(eval_project, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(eval_project, root)
    args = ["eval", "-C", str(root), "--samples", "2", "--max-new-tokens", "4", "--max-examples", "5", "--no-judge"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output[-3000:]
    out = result.output
    assert f"Run {RUN_ID} (best) against its base model" in out
    for row in ("Test loss", "Perplexity", "Stop rate", "Exact match", "ROUGE-L", "chrF"):
        assert row in out, row
    for stage in (
        "Loading run",
        "Test loss of the base model on 5 examples",
        "Answers of the base model to 2 held-out questions",
        "Test loss of the fine-tuned model on 5 examples",
        "Answers of the fine-tuned model to 2 held-out questions",
    ):
        assert stage in out, stage
    assert "Held-out question:" in out and "fine-tuned" in out and "reference" in out
    assert "Report: reports/eval.html" in out and (root / "reports" / "eval.html").is_file()
    assert "LLM judge" not in out  # --no-judge
    summary = json.loads((root / "reports" / "eval.json").read_text(encoding="utf-8"))["summary"]
    assert summary["verdict"]["message"] in out  # the verdict in words, with what to change when it is not better
    assert all(suggestion in out for suggestion in summary["verdict"]["suggestions"])
    for side in ("base", "tuned"):  # the stop rate with its count, and its interval below it
        assert f"{summary[side]['stop_rate']:.0%} ({summary[side]['stopped']}/2)" in out
        assert stop_interval_text(summary[side]) in out
    assert "Loss per example changed by" in out and "max_new_tokens 4: set by you (--max-new-tokens)" in out


def test_errors_name_the_command_that_fixes_them(tmp_path, tiny_train_project):
    outside = runner.invoke(app, ["eval", "-C", str(tmp_path)])
    assert outside.exit_code == 1 and "No Forge project" in outside.output
    root, _ = tiny_train_project()
    untrained = runner.invoke(app, ["eval", "-C", str(root)])
    assert untrained.exit_code == 1
    assert "no training run to evaluate" in untrained.output and "forge train" in untrained.output


def test_an_unknown_run_or_a_run_without_weights_is_refused(eval_project, tmp_path):
    with pytest.raises(ForgeError) as unknown:
        evaluate_run(*staged(eval_project), "nope")
    assert "There is no run 'nope'" in unknown.value.message and RUN_ID in unknown.value.fix
    root = tmp_path / "project"
    shutil.copytree(eval_project, root)
    shutil.rmtree(root / "runs" / RUN_ID / "best")
    with pytest.raises(ForgeError) as no_weights:
        evaluate_run(*staged(root))
    assert "has no saved weights" in no_weights.value.message


def test_judge_asked_for_without_an_llm_advisor_fails_before_any_model_loads(eval_project):
    with pytest.raises(ForgeError) as error:
        evaluate_run(*staged(eval_project), judge=True)
    assert "--judge needs an LLM advisor" in error.value.message and "advisor.provider" in error.value.fix


def test_no_or_an_empty_test_split_says_how_to_hold_one_out(tmp_path, tiny_causal_lm_dir, _support_csv):
    split = {"split": {"train": 0.95, "val": 0.05, "test": 0.0}}
    root = build_project(tmp_path / "p", tiny_causal_lm_dir, _support_csv, strong_adapter=False, preprocessing=split)
    from forgellm.project.run_record import RunSpec

    prepared = __import__("pathlib").Path(RunSpec.load(root / "runs" / RUN_ID).prepared_dir)
    test_file = prepared / "test.parquet"
    if test_file.is_file():  # prepare wrote an empty test split: the empty case first, then the missing one
        assert pq.read_metadata(test_file).num_rows == 0
        with pytest.raises(ForgeError) as empty:
            evaluate_run(*staged(root))
        assert "test split" in empty.value.message and "is empty" in empty.value.message
        test_file.unlink()
    else:  # no file: make the empty one from the val split's schema
        table = pq.read_table(prepared / "val.parquet")
        pq.write_table(table.slice(0, 0), test_file)
        with pytest.raises(ForgeError) as empty:
            evaluate_run(*staged(root))
        assert "is empty" in empty.value.message
        test_file.unlink()
    result = runner.invoke(app, ["eval", "-C", str(root)])
    assert result.exit_code == 1 and "has no test split" in result.output
    assert "preprocessing.split.test" in result.output and "forge prepare" in result.output


@pytest.mark.parametrize("status", ["better", "no_better", "worse"])
def test_ignite_shows_the_verdict_unless_the_model_is_better(status, capsys):
    from forgellm.cli.ignite_cmds import _eval_verdict
    from forgellm.pipeline import StageOutcome

    verdict = {"status": status, "message": f"The fine-tuned model is {status}.", "suggestions": ["Raise it."]}
    _eval_verdict(StageOutcome("eval", "reused", 0.0, "decision", {"summary": {"verdict": verdict}}))
    _eval_verdict(StageOutcome("eval", "reused", 0.0, "decision", {"summary": {}}))  # an older ignite.json
    _eval_verdict(None)  # no eval stage
    out = capsys.readouterr().out
    if status == "better":
        assert out == ""
    else:
        assert f"The fine-tuned model is {status}." in out and "Raise it." in out
