"""The project package: one layout that names every path, records that read back what they wrote, readers
that survive missing, damaged and older files, and one checkpoint listing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from stage_support import staged

from forgellm.errors import ForgeError
from forgellm.project.eval_record import EvalRecord
from forgellm.project.export_record import ExportFiles, ExportMetadata, OllamaRecord, newest_export
from forgellm.project.layout import TRAINER_STATE, ExportLayout, PreparedLayout, ProjectLayout, RunLayout
from forgellm.project.manifest import Manifest
from forgellm.project.prepared import PreparedData, PreparedStats, SplitCounts, published_data
from forgellm.project.run_record import RunRecord, RunSpec, RunSummary, latest_checkpoint, list_checkpoints
from forgellm.status import project_status

PACKAGE = Path(__file__).resolve().parents[2] / "forgellm"


# ------------------------------------------------------------------------------------------------ layout


def test_layout_names_each_path_under_the_project(tmp_path):
    layout = ProjectLayout(tmp_path)
    run = layout.run("20261122-224312-lora-x")
    export = layout.export("bot")
    assert layout.config_file == tmp_path / "forge.yaml"
    assert layout.prepared("abc").folder == tmp_path / "data" / "prepared" / "abc"
    assert layout.prepared("abc").stats.name == "stats.json" and layout.prepared("abc").manifest.name == "manifest.json"
    assert run.folder == tmp_path / "runs" / "20261122-224312-lora-x" and run.run_id == "20261122-224312-lora-x"
    assert (run.spec.name, run.config.name, run.metrics.name) == ("run.json", "config.yaml", "metrics.jsonl")
    assert run.checkpoint(12) == run.folder / "checkpoints" / "step-12" and run.best == run.folder / "best"
    assert (run.summary.name, run.logs.name, run.worker_log(2).name) == ("summary.json", "logs", "worker-2.log")
    assert (export.metadata.name, export.modelfile.name, export.merged.name) == ("metadata.json", "Modelfile", "merged")
    assert export.gguf("bot", "q8_0") == tmp_path / "exports" / "bot" / "bot-q8_0.gguf"
    assert layout.eval_json == tmp_path / "reports" / "eval.json" and layout.study_html.name == "study.html"
    assert layout.project_lock == tmp_path / ".forge" / "project.lock" and layout.ignite_state.name == "ignite.json"
    assert list(layout.folders()) == ["data", "data/prepared", "runs", "exports", "reports", ".forge"]


# File names and folder joins that only forgellm/project/layout.py may spell.
_FILE_NAMES = (
    "run.json config.yaml metrics.jsonl summary.json loss.png trainer_state.pt metadata.json Modelfile README.md "
    "stats.json manifest.json rejects.jsonl eval.json eval.html study.json study.html ignite.json project.lock "
    "input-hashes.json"
).split()
_FOLDERS = ("runs", "exports", "reports", "prepared", "data", ".forge", "checkpoints", "best", "merged", "logs")
_LITERAL = re.compile(r"""["'](%s)["'.]""" % "|".join(map(re.escape, _FILE_NAMES)))  # noqa: UP031
_JOIN = re.compile(r"""/\s*["'](%s)["']""" % "|".join(map(re.escape, _FOLDERS)))  # noqa: UP031


def test_file_names_and_folder_joins_live_only_in_the_layout():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "project" / "layout.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _LITERAL.search(line) or _JOIN.search(line):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not found, "use forgellm.project.layout instead of spelling these paths:\n" + "\n".join(found)


def test_the_project_package_does_not_import_status():
    code = "import sys, forgellm.project, forgellm.project.records; print([m for m in sys.modules if 'status' in m])"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "forgellm.status" not in output


# ------------------------------------------------------------------------------------------------ round trips


def _stats() -> PreparedStats:
    return PreparedStats(
        input={"path": "/data/support.csv", "bytes": 120, "sha256": "ab" * 32},
        format="qa",
        stage="sft",
        model="smollm2-135m",
        template="chatml",
        max_length=512,
        rows_read=200,
        kept=190,
        rejected=10,
        rejected_by_reason={"empty answer": 10},
        splits={"train": SplitCounts(170, 6800, 3400, 90), "val": SplitCounts(10, 400, 200, 60)},
        seconds_by_stage={"tokenize": 1.5},
        warnings=["a warning"],
    )


def test_prepared_data_reads_manifest_and_stats_into_one_record(tmp_path):
    folder = PreparedLayout(tmp_path / "data" / "prepared" / "f00d")
    folder.folder.mkdir(parents=True)
    manifest = Manifest({"path": "/data/support.csv"}, "settings-fp", "tok:300", 500, "qa", complete=True)
    manifest.save(folder.folder)
    _stats().save(folder)
    data = PreparedData.load(folder)
    assert data is not None and data.stats == _stats() and data.manifest == manifest
    assert (data.fingerprint, data.complete, data.tokenizer_id, data.format) == ("f00d", True, "tok:300", "qa")
    assert data.examples() == {"train": 170, "val": 10} and data.rejected == 10
    assert (data.stage, data.model, data.template, data.max_length) == ("sft", "smollm2-135m", "chatml", 512)
    assert published_data(ProjectLayout(tmp_path)) == [data]


def test_run_records_round_trip(tmp_path):
    run = RunLayout(tmp_path / "runs" / "r1")
    run.folder.mkdir(parents=True)
    spec = RunSpec("r1", str(tmp_path), "/p/f00d", "/models/tiny", "tok:300")
    spec.save(run)
    summary = RunSummary(
        run_id="r1",
        status="completed",
        reason="max_steps",
        steps=8,
        best_val_loss=1.25,
        recoveries=[{"kind": "oom", "step": 3}],
        config_changes={"training.micro_batch_size": {"from": 4, "to": 2}},
        paths={"run_dir": str(run.folder), "best": None},
    )
    summary.save(run)
    assert RunSpec.load(run) == spec and RunSummary.load(run) == summary
    assert json.loads(run.summary.read_text())["status"] == "completed"  # the keys older readers know


def test_export_metadata_round_trips(tmp_path):
    export = ExportLayout(tmp_path / "exports" / "bot")
    export.folder.mkdir(parents=True)
    meta = ExportMetadata(
        name="bot",
        run_id="r1",
        checkpoint="best",
        chat_template={"name": "chatml"},
        stop=["<|im_end|>"],
        num_ctx=2048,
        files=ExportFiles(gguf={"q8_0": "bot-q8_0.gguf"}, modelfile="Modelfile"),
        ollama=OllamaRecord(model="bot", command="ollama create bot -f exports/bot/Modelfile", reachable=False),
        merged_seconds=1.5,
    )
    meta.save(export)
    assert ExportMetadata.load(export) == meta
    on_disk = json.loads(export.metadata.read_text())
    assert on_disk["files"] == {"merged": "merged", "gguf": {"q8_0": "bot-q8_0.gguf"}, "modelfile": "Modelfile"}
    assert on_disk["ollama"] == {
        "registered": False,
        "model": "bot",
        "command": meta.ollama.command,
        "reachable": False,
    }
    assert newest_export(ProjectLayout(tmp_path)) == export


def test_eval_record_round_trips(tmp_path):
    record = EvalRecord(
        run_id="r1",
        checkpoint="best",
        summary={"base": {"loss": 2.0, "perplexity": 7.39}, "tuned": {"loss": 1.5, "exact_match": 0.25}},
        examples=[{"prompt": "hi", "base": "a", "tuned": "b"}],
    )
    record.save(ProjectLayout(tmp_path))
    loaded = EvalRecord.load(ProjectLayout(tmp_path))
    assert loaded == record
    assert loaded.figures("tuned", ("loss", "perplexity")) == {"loss": 1.5, "perplexity": None, "exact_match": 0.25}
    assert loaded.summary_of("r1") == record.summary and loaded.summary_of("r2") == {}


# ------------------------------------------------------------------------------------------ damaged, missing, older


@pytest.mark.parametrize("text", [None, "", '{"status": ', "[1, 2]"])
def test_readers_of_missing_or_damaged_files_give_none(tmp_path, text):
    project = ProjectLayout(tmp_path)
    run, export, prepared = project.run("r1"), project.export("bot"), project.prepared("f00d")
    for path in (run.spec, run.summary, export.metadata, project.eval_json, prepared.stats, prepared.manifest):
        path.parent.mkdir(parents=True, exist_ok=True)
        if text is not None:
            path.write_text(text)
    assert RunSpec.read(run) is None and RunSummary.load(run) is None
    assert ExportMetadata.load(export) is None and EvalRecord.load(project) is None
    assert PreparedStats.load(prepared) is None and PreparedData.load(prepared) is None
    record = RunRecord.load(run)
    assert (record.spec, record.summary, record.checkpoints, record.best, record.status) == (None, None, [], None, None)
    with pytest.raises(ForgeError, match="missing or damaged"):
        RunSpec.load(run)


def test_files_of_an_older_or_newer_forge_still_read(tmp_path):
    run = RunLayout(tmp_path)
    run.spec.write_text(json.dumps({"run_id": "r1", "project_dir": "/p", "prepared_dir": "/d", "model_dir": "/m",
                                    "tokenizer_id": "t", "added_later": 1}))  # fmt: skip
    run.summary.write_text(json.dumps({"status": "completed", "steps": 4}))  # no version: written before records
    assert RunSpec.load(run).version == 1 and RunSpec.load(run).prepared_dir == "/d"
    summary = RunSummary.load(run)
    assert (summary.status, summary.steps, summary.version, summary.recoveries) == ("completed", 4, 1, [])


# ------------------------------------------------------------------------------------------------ checkpoints


def test_an_incomplete_checkpoint_is_not_listed(tmp_path):
    run = RunLayout(tmp_path)
    for step, complete in ((3, True), (20, True), (25, False)):
        run.checkpoint(step).mkdir(parents=True)
        if complete:
            (run.checkpoint(step) / TRAINER_STATE).write_bytes(b"state")
    (run.checkpoints / ".tmp-step-30").mkdir()  # a checkpoint being written
    (run.checkpoints / "step-x").mkdir()
    assert [c.step for c in list_checkpoints(run)] == [3, 20]
    assert latest_checkpoint(run) == run.checkpoint(20)
    assert RunRecord.load(run).last_checkpoint.path == run.checkpoint(20)


# ------------------------------------------------------------------------------------------------ status


def test_status_reads_the_records_of_a_real_prepared_project(tiny_train_project):
    from forgellm.training.runs import create_run

    root, prepared_dir = tiny_train_project()
    data = PreparedData.load(prepared_dir)
    assert data is not None and data.complete and data.stats is not None
    report = project_status(root)
    assert report["data"]["state"] == "current" and report["data"]["current"] == data.fingerprint
    (entry,) = report["data"]["prepared"]
    assert entry["examples"] == data.examples() and entry["rejected"] == data.rejected
    assert entry["tokenizer"] == data.tokenizer_id and entry["problems"] == []
    run = create_run(*staged(root), max_steps=2)
    (run_entry,) = project_status(root)["runs"]
    assert run_entry["id"] == run.run_id and run_entry["prepared"] == data.fingerprint
    assert run_entry["on_current_data"] is True and run_entry["state"] == "incomplete"
    assert RunRecord.load(run.run_dir).spec == run.spec
