"""`forge status`: projects built in each state with real files, as each stage leaves them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from forgellm.cli.main import app
from forgellm.config.io import load_config, save_config
from forgellm.data.prepare.manifest import input_fingerprint, settings_fingerprint
from forgellm.project import advisor_settings, init_project
from forgellm.project.manifest import Manifest
from forgellm.project.run_record import RunSpec
from forgellm.status import project_status

runner = CliRunner()
TOKENIZER = "tiny/tokenizer:300"
ROWS = "instruction,response\nWhere is my order?,It ships tomorrow.\nCan I get a refund?,Yes within 30 days.\n"
TOP_KEYS = {"found", "project_dir", "project", "plan", "model", "data", "runs", "training_now", "exports", "eval"}
TOP_KEYS |= {"hardware", "advisor", "notes", "next", "pipeline"}


# ------------------------------------------------------------------------------------------------ builders


def planned_project(tmp_path: Path, *, goal: str | None = "Answer customer questions", planned: bool = True) -> Path:
    """A project whose forge.yaml names support.csv as its data, as `forge plan` writes it."""
    root = tmp_path / "bot"
    init_project(root)
    config = load_config(root).config
    config.data.source = "support.csv"
    config.project.goal = goal
    if planned:
        config.training.rationale = "Sized for 2 CPU cores."
        config.training.max_steps = 40
    save_config(config, root / "forge.yaml")
    (root / "support.csv").write_text(ROWS)
    return root


def prepare_by_hand(root: Path, name: str = "a1b2c3d4e5f6", counts=(180, 10, 10)) -> Path:
    """A published data/prepared/<fp>/ with the manifest and stats `forge prepare` writes."""
    config = load_config(root).config
    folder = root / "data" / "prepared" / name
    folder.mkdir(parents=True)
    fingerprint = input_fingerprint(root / config.data.source)
    manifest = Manifest(fingerprint, settings_fingerprint(config, TOKENIZER), TOKENIZER, 500, "qa", complete=True)
    manifest.save(folder)
    splits = {
        split: {"examples": n, "tokens": n * 40} for split, n in zip(("train", "val", "test"), counts, strict=True)
    }
    stats = {"input": fingerprint, "splits": splits, "rejected": 2, "model": config.model.ref, "max_length": 2048}
    (folder / "stats.json").write_text(json.dumps(stats))
    return folder


def run_by_hand(root: Path, run_id: str, prepared: Path, *, status=None, steps=40, checkpoints=(), **summary) -> Path:
    """runs/<id>/ with run.json, complete checkpoints, and summary.json when `status` is given."""
    run_dir = root / "runs" / run_id
    (run_dir / "logs").mkdir(parents=True)
    RunSpec(run_id, str(root), str(prepared), "/models/tiny", TOKENIZER).save(run_dir)
    for step in checkpoints:
        (run_dir / "checkpoints" / f"step-{step}").mkdir(parents=True)
        (run_dir / "checkpoints" / f"step-{step}" / "trainer_state.pt").write_bytes(b"state")
    if status is not None:
        record = {"run_id": run_id, "status": status, "steps": steps, "total_steps": 40, "best_val_loss": 1.2345}
        (run_dir / "summary.json").write_text(json.dumps({**record, **summary}))
    return run_dir


def export_by_hand(root: Path, run_id: str, name: str = "bot", **ollama) -> Path:
    folder = root / "exports" / name
    folder.mkdir(parents=True)
    (folder / f"{name}-q8_0.gguf").write_bytes(b"G" * 4096)
    (folder / "Modelfile").write_text(f"FROM ./{name}-q8_0.gguf\n")
    record = {"registered": False, "model": name, "command": f"ollama create {name} -f exports/{name}/Modelfile"}
    metadata = {
        "name": name,
        "run_id": run_id,
        "published_at": "2026-11-22T12:00:00",
        "files": {"merged": "merged", "gguf": {"q8_0": f"{name}-q8_0.gguf"}, "modelfile": "Modelfile"},
        "performance": {"best_val_loss": 1.2345},
        "ollama": {**record, **ollama},
    }
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return folder


def eval_by_hand(root: Path, run_id: str) -> None:
    summary = {"base": {"loss": 2.5, "perplexity": 12.18, "stop_rate": 0.1}, "tuned": {"loss": 1.1, "stop_rate": 0.95}}
    (root / "reports" / "eval.json").write_text(json.dumps({"run_id": run_id, "summary": summary}))


def status_cli(*args: str) -> str:
    result = runner.invoke(app, ["status", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


# ------------------------------------------------------------------------------------------------ states


def test_outside_a_project_suggests_init_or_ignite(tmp_path):
    report = json.loads(status_cli(str(tmp_path), "--json"))
    assert report["found"] is False and report["project_dir"] is None
    assert report["next"]["command"] == "forge init"
    assert report["next"]["alternatives"] == ['forge ignite FILE "GOAL"']
    human = status_cli(str(tmp_path))
    assert "no Forge project here" in human and "forge init" in human and "forge ignite" in human


def test_fresh_project_suggests_ignite_with_the_real_file_from_a_subfolder(tmp_path):
    root = planned_project(tmp_path, goal=None, planned=False)
    report = project_status(root)
    assert set(report) == TOP_KEYS
    assert report["plan"]["planned"] is False and report["data"]["state"] == "none"
    assert report["next"]["command"] == 'forge ignite support.csv "GOAL"'
    # From runs/ the file is one folder up: the command must work where the user stands.
    inner = project_status(root / "runs")
    assert inner["project_dir"] == str(root.resolve())
    assert inner["next"]["command"] == 'forge ignite ../support.csv "GOAL"'
    assert inner["next"]["alternatives"] == ['forge plan "GOAL" --data ../support.csv']


def test_fresh_project_with_remote_advisor_asks_for_the_key_first(tmp_path):
    init_project(tmp_path, advisor=advisor_settings("gemini"))
    report = project_status(tmp_path)
    assert report["next"]["command"] == "forge login --provider gemini"
    assert report["advisor"]["key"] == {"provider": "gemini", "available": False, "source": None}
    assert any("forge login --provider gemini" in note for note in report["notes"])


def test_planned_but_not_prepared_shows_the_plan_and_asks_for_prepare(tmp_path):
    root = planned_project(tmp_path)
    report = project_status(root)
    plan = report["plan"]
    assert plan["valid"] and plan["planned"] and plan["problems"] == []
    assert (plan["goal"], plan["method"], plan["max_steps"], plan["batch_size"]) == (
        "Answer customer questions",
        "lora",
        40,
        16,
    )
    assert plan["modified_at"] and plan["max_length"] == 2048
    assert report["model"]["ok"] and report["model"]["ready"] is False  # empty model cache in tests
    assert report["next"]["command"] == "forge prepare support.csv"
    human = status_cli(str(root))
    assert "Answer customer questions" in human and "forge prepare support.csv" in human


def test_prepared_and_current_then_stale_when_the_data_file_changes(tmp_path):
    root = planned_project(tmp_path)
    prepare_by_hand(root)
    data = project_status(root)["data"]
    assert (data["state"], data["current"]) == ("current", "a1b2c3d4e5f6")
    entry = data["prepared"][0]
    assert entry["examples"] == {"train": 180, "val": 10, "test": 10}
    assert (entry["settings_current"], entry["input_current"], entry["tokenizer"]) == (True, True, TOKENIZER)
    assert data["input_hashed_now"] is False  # the recorded size+mtime matched: nothing was read
    assert project_status(root)["next"]["command"] == "forge train"

    with open(root / "support.csv", "a") as handle:
        handle.write("Do you ship abroad?,Yes to 40 countries.\n")
    report = project_status(root)
    assert report["data"]["state"] == "stale" and report["data"]["current"] is None
    assert "support.csv changed since" in report["data"]["stale_reasons"][0]
    assert report["next"]["command"] == "forge prepare support.csv"
    assert report["next"]["reason"].startswith("stale: ")
    assert "stale: run forge prepare support.csv" in status_cli(str(root))


def test_same_size_edit_is_caught_and_a_touch_is_hashed_once(tmp_path):
    root = planned_project(tmp_path)
    prepare_by_hand(root)
    source = root / "support.csv"
    later = time.time() + 5
    os.utime(source, (later, later))  # same content, new mtime: one hash, then the cache answers
    first = project_status(root)["data"]
    assert first["state"] == "current" and first["input_hashed_now"] is True
    second = project_status(root)["data"]
    assert second["state"] == "current" and second["input_hashed_now"] is False
    assert (root / ".forge" / "input-hashes.json").is_file()
    source.write_text(ROWS.replace("tomorrow", "tonight!"))  # the same number of bytes
    data = project_status(root)["data"]
    assert data["state"] == "stale" and "same size, different content" in data["stale_reasons"][0]


def test_stale_when_forge_yaml_data_settings_change_not_training_ones(tmp_path):
    root = planned_project(tmp_path)
    prepare_by_hand(root)
    config = load_config(root).config
    config.training.learning_rate = 1e-4  # not part of the prepared data
    save_config(config, root / "forge.yaml")
    assert project_status(root)["data"]["state"] == "current"
    config.model.max_length = 512
    save_config(config, root / "forge.yaml")
    data = project_status(root)["data"]
    assert data["state"] == "stale"
    assert data["prepared"][0]["settings_current"] is False and data["prepared"][0]["input_current"] is True
    assert data["stale_reasons"] == [
        "forge.yaml's data, preprocessing or model settings changed since (model.max_length 2048 → 512)"
    ]


def test_runs_through_eval_export_and_inference(tmp_path):
    root = planned_project(tmp_path)
    prepared = prepare_by_hand(root)
    run_id = "20261122-120000-lora-tiny"
    run_by_hand(root, "20261121-090000-lora-tiny", prepared, status="failed", reason="config", message="bad data")
    run_by_hand(root, run_id, prepared, status="completed", checkpoints=(20, 40))
    report = project_status(root)
    run = report["runs"][-1]
    assert [r["state"] for r in report["runs"]] == ["failed", "completed"]
    assert (run["id"], run["steps"], run["total_steps"], run["best_val_loss"]) == (run_id, 40, 40, 1.2345)
    assert run["on_current_data"] is True and run["started_at"] == "2026-11-22T12:00:00"
    assert report["next"]["command"] == "forge eval"

    eval_by_hand(root, run_id)
    report = project_status(root)
    assert report["eval"]["tuned"]["stop_rate"] == 0.95 and report["eval"]["run_id"] == run_id
    assert report["next"]["command"] == "forge export"

    export_by_hand(root, run_id)
    report = project_status(root)
    export = report["exports"][0]
    assert export["gguf"] == [{"quant": "q8_0", "file": "bot-q8_0.gguf", "bytes": 4096}]
    assert export["modelfile"] == "exports/bot/Modelfile" and export["ollama"]["registered"] is False
    assert report["next"]["command"] == "forge inference"
    assert report["next"]["alternatives"] == ["ollama create bot -f exports/bot/Modelfile"]
    human = status_cli(str(root))
    for text in ("completed", "1.2345", "failed (config)", "q8_0 4 KB"):
        assert text in human, text
    assert re.search(r"stop rate +10% +95%", human)
    assert "ollama create bot -f exports/bot/Modelfile" in human


def test_registered_and_refused_ollama_states(tmp_path):
    root = planned_project(tmp_path)
    prepared = prepare_by_hand(root)
    run_by_hand(root, "20261122-120000-lora-tiny", prepared, status="completed")
    export_by_hand(root, "20261122-120000-lora-tiny", "ok", registered=True, reachable=True)
    export_by_hand(root, "20261122-120000-lora-tiny", "refused", reachable=True, error="model name taken")
    exports = {e["name"]: e["ollama"] for e in project_status(root)["exports"]}
    assert exports["ok"]["registered"] is True
    assert exports["refused"] == {
        "registered": False,
        "model": "refused",
        "reachable": True,
        "command": "ollama create refused -f exports/refused/Modelfile",
        "error": "model name taken",
    }
    human = status_cli(str(root))
    assert "registered as ok" in human and "refused: Ollama refused it: model name taken" in human


@pytest.mark.parametrize(
    ("status", "checkpoints", "expected"),
    [
        ("interrupted", (10,), "forge train --resume {id}"),
        (None, (10, 20), "forge train --resume {id}"),  # killed: no summary.json
        (None, (), "forge train"),  # killed before its first checkpoint
        ("failed", (10,), "forge train --resume {id}"),  # healing gave up on an OOM: resume tries again
    ],
)
def test_unfinished_runs_say_how_to_go_on(tmp_path, status, checkpoints, expected):
    root = planned_project(tmp_path)
    prepared = prepare_by_hand(root)
    run_dir = run_by_hand(
        root, "20261122-130000-lora-tiny", prepared, status=status, checkpoints=checkpoints, reason="oom"
    )
    if status is None:  # what the supervisor had written before the kill
        lines = [{"event": "start", "step": 0, "total_steps": 40, "attempt": 1, "time": 1.0}]
        lines += [{"event": "step", "step": s, "loss": 2.0 - s / 100, "attempt": 1, "time": 1.0 + s} for s in (1, 2, 3)]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"event": "st')
    report = project_status(root)
    run = report["runs"][0]
    assert run["state"] == (status or "incomplete")
    assert report["next"]["command"] == expected.format(id=run["id"])
    if status is None:
        assert (run["steps"], run["total_steps"]) == (3, 40)  # from metrics.jsonl, the cut-off line skipped


def test_a_running_run_holds_the_train_lock_from_another_process(tmp_path):
    root = planned_project(tmp_path)
    prepared = prepare_by_hand(root)
    run_id = "20261122-140000-lora-tiny"
    run_by_hand(root, run_id, prepared, checkpoints=(5,))
    holder = (
        "import sys, time\nfrom pathlib import Path\nfrom forgellm.project.lock import ProjectLock\n"
        "lock = ProjectLock(Path(sys.argv[1]), 'train'); lock.acquire(sys.argv[2]); print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", holder, str(root), run_id], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "held"
        report = project_status(root)
        run = report["runs"][0]
        assert (run["state"], run["pid"]) == ("running", process.pid)
        assert report["training_now"]["run_id"] == run_id
        assert report["next"]["command"] == "forge status" and "is training now" in report["next"]["reason"]
        assert "running" in status_cli(str(root))
    finally:
        process.kill()  # kill -9: the lock file keeps the holder's record, the kernel drops the lock
        process.wait()
    report = project_status(root)
    assert report["runs"][0]["state"] == "incomplete" and report["training_now"] is None
    assert report["next"]["command"] == f"forge train --resume {run_id}"


def test_damaged_files_are_shown_never_raised(tmp_path):
    root = planned_project(tmp_path)
    prepared = prepare_by_hand(root)
    run_id = "20261122-120000-lora-tiny"
    run_by_hand(root, run_id, prepared, status="completed")
    export_by_hand(root, run_id)
    (prepared / "stats.json").write_text('{"splits": ')
    (root / "runs" / run_id / "summary.json").write_text("\x00\x01garbage")
    (root / "runs" / "notes").mkdir()
    (root / "exports" / "bot" / "metadata.json").write_text("[1, 2]")
    (root / "reports" / "eval.json").write_text("{")
    (root / ".forge" / "project.lock").write_text("not json")
    (root / ".forge" / "input-hashes.json").write_text("][")
    broken = root / "data" / "prepared" / "ffffffffffff"
    broken.mkdir()
    (broken / "manifest.json").write_text('{"complete": tru')
    report = project_status(root)
    prepared_entries = {entry["name"]: entry for entry in report["data"]["prepared"]}
    assert report["data"]["state"] == "current" and prepared_entries[prepared.name]["examples"] == {}
    assert prepared_entries["ffffffffffff"]["state"] == "damaged"
    states = {run["id"]: run["state"] for run in report["runs"]}
    assert states == {run_id: "damaged", "notes": "damaged"}
    assert report["exports"][0]["complete"] is False and report["eval"]["damaged"] is True
    notes = "\n".join(report["notes"])
    for text in ("stats.json is damaged", "summary.json is damaged", "no run.json", "metadata.json is damaged"):
        assert text in notes, text
    assert "manifest.json is damaged" in notes and "eval.json is damaged" in notes
    human = status_cli(str(root))
    assert "damaged" in human and "Traceback" not in human
    json.loads(status_cli(str(root), "--json"))


def test_invalid_forge_yaml_still_shows_the_rest(tmp_path):
    root = planned_project(tmp_path)
    prepared = prepare_by_hand(root)
    run_by_hand(root, "20261122-120000-lora-tiny", prepared, status="completed")
    (root / "forge.yaml").write_text("training:\n  method: nope\n")
    report = project_status(root)
    assert report["plan"]["valid"] is False and any("training.method" in p for p in report["plan"]["problems"])
    assert report["runs"][0]["state"] == "completed" and report["model"] is None
    assert report["data"]["prepared"][0]["settings_current"] is None and report["data"]["state"] == "unknown"
    assert report["next"]["command"] == "forge config validate"
    assert "invalid" in status_cli(str(root))


def test_real_prepared_folder_is_current_until_forge_yaml_changes(tiny_train_project):
    root, prepared = tiny_train_project()
    stats = json.loads((prepared / "stats.json").read_text())
    report = json.loads(status_cli(str(root), "--json"))
    data = report["data"]
    assert (data["state"], data["current"]) == ("current", prepared.name)
    assert data["input_hashed_now"] is False
    assert data["prepared"][0]["examples"] == {k: v["examples"] for k, v in stats["splits"].items()}
    assert report["next"]["command"] == "forge train"
    config = load_config(root).config
    config.preprocessing.seed = 7  # another split
    save_config(config, root / "forge.yaml")
    data = project_status(root)["data"]
    assert data["state"] == "stale" and data["prepared"][0]["settings_current"] is False


def test_status_is_fast_and_imports_nothing_heavy(tmp_path):
    root = planned_project(tmp_path)
    prepared = prepare_by_hand(root)
    run_by_hand(root, "20261122-110000-lora-tiny", prepared, status="completed")
    running = run_by_hand(root, "20261122-120000-lora-tiny", prepared, checkpoints=(2,))
    (running / "metrics.jsonl").write_text('{"event": "step", "step": 1, "loss": 2.0}\n')
    export_by_hand(root, "20261122-110000-lora-tiny")
    eval_by_hand(root, "20261122-110000-lora-tiny")
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from forgellm.cli.main import app\n"
        "try:\n    app(['status', sys.argv[1]])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'gguf', 'huggingface_hub', 'jinja2', 'pyarrow', 'peft',"
        " 'matplotlib') if m in sys.modules]\n"
        "print('HEAVY', heavy, 'SECONDS', round(time.perf_counter() - t, 3))\n"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, str(root / "runs")], capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
    assert "forge train --resume 20261122-120000-lora-tiny" in out.stdout
    # Typically ~0.5 s with the interpreter's start on a 2-core machine; generous for a loaded CI runner.
    assert elapsed < 2.0, out.stdout
