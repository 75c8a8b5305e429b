"""A run whose model.max_length is below the prepared one (healing halves it after an OOM) really
trains on examples of at most that length: the loop's every batch, packed or padded, and after a
real injected OOM through the supervisor."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from stage_support import staged

from forgellm.config.io import load_config, save_config
from forgellm.project.layout import RUN_CONFIG
from forgellm.training.data import LengthCut, TokenizedSplit, fit_to_length, load_split, prepared_max_length
from forgellm.training.packing import IGNORE_INDEX
from forgellm.training.protocol import ExitCode

from .conftest import TRAIN_DEFAULTS, make_run_dir

X = IGNORE_INDEX


def _split(examples: list[tuple[list[int], list[int]]]) -> TokenizedSplit:
    offsets = np.zeros(len(examples) + 1, dtype=np.int64)
    np.cumsum([len(ids) for ids, _ in examples], out=offsets[1:])
    ids = np.concatenate([np.asarray(i, np.int32) for i, _ in examples])
    labels = np.concatenate([np.asarray(t, np.int32) for _, t in examples])
    return TokenizedSplit("train", ids, labels, offsets)


def _examples(split: TokenizedSplit) -> list[tuple[list[int], list[int]]]:
    return [tuple(part.tolist() for part in split.example(i)) for i in range(len(split))]


def test_a_chat_example_keeps_its_start_with_aligned_labels_and_the_losses_are_counted():
    split = _split([
        ([1, 2, 3], [X, X, 3]),  # short: untouched
        ([1, 2, 3, 4, 5, 6], [X, X, 3, 4, 5, 6]),  # answer from token 3: cut keeps 3, 4; loses its stop (6)
        ([1, 2, 3, 4, 5, 6], [X, X, X, X, X, 6]),  # its only trained token lies beyond the cut: dropped
        ([1, 2, 3, 4, 5], [X, 2, 3, 4, X]),  # trained tokens all within the cut: cut, keeps its stop
    ])
    cut = LengthCut(prepared_max_length=6, max_length=4)
    fitted = fit_to_length(split, 4, split_long=False, cut=cut)
    assert _examples(fitted) == [
        ([1, 2, 3], [X, X, 3]),
        ([1, 2, 3, 4], [X, X, 3, 4]),
        ([1, 2, 3, 4], [X, 2, 3, 4]),
    ]
    assert (cut.cut, cut.lost_stop_token, cut.dropped, cut.pieces_added) == (3, 1, 1, 0)
    assert "1 cut answers lost their end-of-turn token" in cut.message() and "prepared at 6" in cut.message()


def test_a_pretraining_window_is_split_into_pieces_and_a_piece_with_nothing_to_predict_is_dropped():
    split = _split([(list(range(10, 19)), list(range(10, 19))), ([7, 8], [7, 8])])
    cut = LengthCut(prepared_max_length=9, max_length=4)
    fitted = fit_to_length(split, 4, split_long=True, cut=cut)
    # 9 tokens -> 4 + 4 + 1; the last piece of one token trains on nothing (its first token is never a target).
    assert _examples(fitted) == [
        (list(range(10, 14)), list(range(10, 14))),
        (list(range(14, 18)), list(range(14, 18))),
        ([7, 8], [7, 8]),
    ]
    assert (cut.cut, cut.pieces_added, cut.dropped) == (1, 2, 1)


def _run(run_dir):
    from forgellm.training.loop import train

    lines: list[str] = []
    code = train(run_dir, None, lines.append)
    return code, [json.loads(line) for line in lines]


def _shorten_run(run_dir, max_length: int) -> None:
    """What healing does after an OOM: a shorter max_length in the run's config snapshot only."""
    config = load_config(run_dir / RUN_CONFIG, environ={}).config
    config.model.max_length = max_length
    save_config(config, run_dir / RUN_CONFIG)


@pytest.mark.parametrize("packing", [True, False])
def test_every_batch_the_loop_sees_fits_the_runs_max_length(tiny_train_project, monkeypatch, packing):
    import forgellm.training.parallel as loop  # LossModule computes every training and validation loss

    root, prepared = tiny_train_project(max_steps=4, eval_every_steps=2, save_every_steps=4, packing=packing)
    assert prepared_max_length(prepared) == 256  # read from the preparation's record, not forge.yaml
    assert load_split(prepared, "train").lengths.max() > 128, "no example to cut: the test would prove nothing"
    run_dir = make_run_dir(root, prepared)
    _shorten_run(run_dir, 128)
    widths: list[int] = []
    real_loss = loop.batch_loss

    def recording(model, batch, targets):
        widths.append(int(batch.input_ids.shape[1]))
        assert int(((batch.labels[:, 1:] != IGNORE_INDEX)).sum()) > 0
        return real_loss(model, batch, targets)

    monkeypatch.setattr(loop, "batch_loss", recording)
    code, events = _run(run_dir)
    assert code == ExitCode.OK
    assert widths and max(widths) <= 128, widths  # training steps and evaluations alike
    start = next(e for e in events if e["event"] == "start")
    assert start["max_length"] == 128
    warning = next(e for e in events if e["event"] == "warning" and e["kind"] == "max_length")
    assert warning["cut"]["prepared_max_length"] == 256 and warning["cut"]["max_length"] == 128
    assert warning["cut"]["cut"] > 0 and "cut to model.max_length 128" in warning["message"]


def test_a_run_at_the_prepared_length_changes_nothing(tiny_train_project):
    from forgellm.training.data import fit_splits_to_length

    root, prepared = tiny_train_project()
    splits = (load_split(prepared, "train"), load_split(prepared, "val"))
    train, val, cut = fit_splits_to_length(prepared, splits, 256, cpt=False)
    assert cut is None and train is splits[0] and val is splits[1]


def _long_answers_csv(path, rows: int = 40):
    """Questions with answers of 300-420 characters: every example is longer than 256 byte tokens."""
    sentence = "Please open the settings page, choose the account tab and follow the steps shown there. "
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["instruction", "response"])
        for number in range(rows):
            answer = (f"For order {number}: " + sentence * 5)[: 300 + 3 * number]
            writer.writerow([f"How do I change the address of order {number}?", answer])
    return path


def test_an_out_of_memory_heal_to_a_shorter_max_length_really_trains_shorter(
    tmp_path, tiny_causal_lm_dir, monkeypatch
):
    """The memory ladder's last rung before changing the model: halve max_length. The attempt after
    it must see no row longer than the new length (one example per micro-batch: a step's tokens are
    its row's width)."""
    from forgellm.config.schema import ForgeConfig
    from forgellm.data.prepare.run import prepare_dataset
    from forgellm.training.summary import read_metrics
    from forgellm.training.supervisor import run_training

    root = tmp_path / "long"
    root.mkdir()
    training = {**TRAIN_DEFAULTS, "micro_batch_size": 1, "gradient_checkpointing": True, "max_steps": 6,
                "save_every_steps": 2, "eval_every_steps": 6}
    model = {"ref": str(tiny_causal_lm_dir), "max_length": 512, "chat_template": {"name": "chatml"}}
    save_config(ForgeConfig.model_validate({"model": model, "training": training}), root / "forge.yaml")
    prepared = prepare_dataset(*staged(root), _long_answers_csv(tmp_path / "long.csv")).output_dir
    assert load_split(prepared, "train").lengths.min() > 256
    monkeypatch.setenv("FORGE_FAULT", "oom@3")
    result = run_training(*staged(root))
    assert result.status == "completed"
    records = read_metrics(result.run_dir)
    (recovery,) = [r for r in records if r.get("event") == "recovery"]
    assert recovery["changes"]["model.max_length"] == {"from": 512, "to": 256}
    healed = [r for r in records if r.get("attempt") == 2]
    steps = [r for r in healed if r.get("event") == "step"]
    assert steps and all(s["tokens"] <= 256 for s in steps), [s["tokens"] for s in steps]
    warning = next(r for r in healed if r.get("event") == "warning" and r.get("kind") == "max_length")
    assert warning["cut"]["cut"] == warning["cut"]["lost_stop_token"] > 0  # every answer ran past 256
