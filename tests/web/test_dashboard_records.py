"""The dashboard's page data comes from the records `forge status` reads, and metrics.jsonl is read line
by line as it grows, a damaged line skipped and counted."""

from __future__ import annotations

import json

from forgellm.config.io import load_config
from forgellm.project.lock import ProjectLock
from forgellm.web.dashboard import records
from forgellm.web.dashboard.metrics_stream import MetricsReader, last_event_id
from web import dashboard_support as ds


def test_runs_list_is_status_runs_newest_first_with_method_and_model(tmp_path):
    root = ds.project(tmp_path)
    assert records.runs_page(root)["runs"] == []
    ds.run(root, "20261201-100000-lora-a", evals={5: 1.5, 10: 1.25})
    ds.run(root, "20261201-110000-lora-b", status=None)
    data = records.runs_page(root)
    older, newer = data["runs"][1], data["runs"][0]
    assert (newer["id"], newer["state"], newer["steps"]) == ("20261201-110000-lora-b", "incomplete", 10)
    assert (older["state"], older["best_val_loss"], older["best_step"]) == ("completed", 1.25, 10)
    assert (older["method"], older["model"]) == ("lora", load_config(root).config.model.ref)
    assert older["duration_s"] == 10.0 and older["started_at"].startswith("2026-12-01T10:00")
    with ProjectLock(root, "train") as lock:  # a training holding the lock is the running one, as in status
        lock.acquire("20261201-110000-lora-b")
        assert records.runs_page(root)["runs"][0]["state"] == "running"


def test_run_page_checkpoints_carry_their_val_loss_and_the_best_one(tmp_path):
    root = ds.project(tmp_path)
    ds.run(root, "20261201-100000-lora-a", steps=15, checkpoints=(5, 10, 15), evals={5: 1.5, 10: 1.2, 15: 1.4})
    page = records.run_page(root, "20261201-100000-lora-a")
    assert [(c["name"], c["val_loss"], c["best"]) for c in page["checkpoints"]] == [
        ("step-5", 1.5, False), ("step-10", 1.2, True), ("step-15", 1.4, False),
    ]  # fmt: skip
    training = next(section for section in page["plan"] if section["name"] == "training")
    assert training["rationale"].startswith("Sized for 2 CPU cores") and training["settings"]["method"] == "lora"
    assert records.run_page(root, "20261201-999999-none") is None


def test_curves_keep_the_last_value_of_a_step_trained_again(tmp_path):
    root = ds.project(tmp_path)
    ds.run(root, "20261201-100000-lora-a", steps=4, evals={4: 1.0}, extra=[ds.step_line(3, loss=9.0, attempt=2)])
    curve = records.run_curves(root, ["20261201-100000-lora-a", "not-a-run"])
    assert list(curve) == ["20261201-100000-lora-a"]
    assert curve["20261201-100000-lora-a"]["step"] == [1, 2, 3, 4]
    assert curve["20261201-100000-lora-a"]["loss"][2] == 9.0
    assert (curve["20261201-100000-lora-a"]["val_step"], curve["20261201-100000-lora-a"]["val_loss"]) == ([4], [1.0])


def test_eval_and_exports_pages_read_their_records(tmp_path):
    root = ds.project(tmp_path)
    assert records.eval_page(root)["eval"] is None and records.exports_page(root)["exports"] == []
    summary = {"base": {"loss": 2.5, "stop_rate": 0.1}, "tuned": {"loss": 1.1, "stop_rate": 0.95}}
    summary["verdict"] = {"status": "better", "message": "Better.", "suggestions": []}
    example = {"question": "Where?", "base": "No idea", "tuned": "It ships.", "reference": "Tomorrow."}
    (root / "reports" / "eval.json").write_text(json.dumps({"run_id": "r1", "summary": summary, "examples": [example]}))
    page = records.eval_page(root)
    assert {f["name"]: (f["base"], f["tuned"]) for f in page["figures"]}["loss"] == (2.5, 1.1)
    assert page["examples"][0]["tuned"] == "It ships." and page["verdict"]["message"] == "Better."
    folder = root / "exports" / "bot"
    folder.mkdir(parents=True)
    (folder / "bot-q8_0.gguf").write_bytes(b"G" * 4096)
    (folder / "Modelfile").write_text("FROM ./bot-q8_0.gguf\n")
    meta = {"name": "bot", "run_id": "r1", "files": {"gguf": {"q8_0": "bot-q8_0.gguf"}, "modelfile": "Modelfile"}}
    (folder / "metadata.json").write_text(json.dumps(meta))
    (export,) = records.exports_page(root)["exports"]
    assert {"name": "bot-q8_0.gguf", "bytes": 4096} in export["files"]
    assert export["modelfile_text"] == "FROM ./bot-q8_0.gguf\n"
    assert export["ollama_command"] == "ollama create bot -f exports/bot/Modelfile"


def test_reader_holds_back_a_line_being_written_and_skips_a_damaged_one(tmp_path):
    path = tmp_path / "metrics.jsonl"
    reader = MetricsReader(path)
    assert reader.read() == []  # no file yet: a run that is starting
    path.write_text('{"event": "step", "step": 1}\n{"event": "st')
    (first,) = reader.read()
    assert (first.number, first.record["step"]) == (1, 1)
    with open(path, "a") as handle:
        handle.write('ep", "step": 2}\nnot json\n[1]\n{"event": "end"}')
    lines = reader.read()
    problems = [(line.number, line.problem) for line in lines]
    assert problems == [(2, None), (3, "not valid JSON"), (4, "not a JSON object")]
    (last,) = reader.read(final=True)  # the run is over: a line without its newline is all there is
    assert (last.number, last.record) == (5, {"event": "end"})
    resumed = MetricsReader(path, after=3).read(final=True)
    assert [line.number for line in resumed] == [4, 5]
    assert [last_event_id(h) for h in (None, "", "7", "x", "-3")] == [0, 0, 7, 0, 0]
