"""ignite reacts to what training's errors are (their codes), never to how they are worded."""

from __future__ import annotations

import pytest

from forgellm import pipeline
from forgellm.errors import ErrorCode, ForgeError
from forgellm.project import ProjectLayout
from forgellm.training import runs, supervisor


def _train_stage_failing_with(error: ForgeError, tmp_path, monkeypatch):
    # The run ignite remembers looked unfinished, but by the time training resumed it had completed.
    monkeypatch.setattr(runs, "run_status", lambda run_dir: "interrupted")

    def run_training(layout, config, *, prepared=None, resume=None, on_event=None, **where):
        raise error

    monkeypatch.setattr(supervisor, "run_training", run_training)
    options = pipeline.IgniteOptions(data=tmp_path / "d.csv", goal="a goal")
    carried = pipeline.Carried(ProjectLayout(tmp_path))
    return pipeline._stage_train(carried, options, pipeline.IgniteHooks(), {"train_run": "r1"})


def test_a_run_that_finished_before_the_resume_counts_as_trained(tmp_path, monkeypatch):
    reworded = ForgeError("Run r1 is done.", code=ErrorCode.NOTHING_TO_RESUME, data={"run": "r1"})
    outcome = _train_stage_failing_with(reworded, tmp_path, monkeypatch)
    assert outcome.status == "done" and outcome.details == {"run_id": "r1"}


def test_other_training_errors_still_stop_ignite_whatever_their_words(tmp_path, monkeypatch):
    worded = ForgeError("Run r1 already completed; there is nothing to resume.", code=ErrorCode.RUN_NOT_RESUMABLE)
    with pytest.raises(ForgeError) as caught:
        _train_stage_failing_with(worded, tmp_path, monkeypatch)
    assert caught.value is worded
