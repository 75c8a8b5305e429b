"""`forge pipeline cpt-ift` end to end on the tiny model: CPT on the httpx docs, IFT on conversations from the
Japanese chat transcripts, eval with forgetting measured on the general source (alpaca); resume at either
stage after an interruption; status shows both stages; export's default is the IFT run; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from forgellm.cli.main import app
from forgellm.pipelines.cpt_ift import PipelineHooks, PipelineInterrupted, PipelineOptions, run_cpt_ift

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
DOCS, CHATS, ALPACA = SHARED / "httpx_docs", SHARED / "chat_transcripts_ja", SHARED / "alpaca_en_demo.json"
GOAL = "Answer questions about httpx"
runner = CliRunner()


@pytest.fixture
def small_steps(monkeypatch, tiny_causal_lm_dir):
    """Few steps, a checkpoint every step (a stop always has one to resume), the tiny model's length."""
    if not DOCS.is_dir():
        pytest.skip(f"the shared data sets are not at {SHARED}")
    settings = {"SAVE_EVERY_STEPS": "1", "EVAL_EVERY_STEPS": "2", "MICRO_BATCH_SIZE": "2",
                "GRADIENT_ACCUMULATION": "1", "PRECISION": "fp32", "GRADIENT_CHECKPOINTING": "false"}  # fmt: skip
    for key, value in settings.items():
        monkeypatch.setenv(f"FORGE_TRAINING__{key}", value)
    monkeypatch.setenv("FORGE_MODEL__MAX_LENGTH", "1024")  # Japanese turns in a byte tokenizer
    monkeypatch.setenv("FORGE_PREPROCESSING__CPT_OVERLAP", "32")
    return PipelineOptions(DOCS, CHATS, GOAL, ALPACA, model=str(tiny_causal_lm_dir), max_steps=3)


class _StopAt(Exception):
    pass


def _stop_in(step: str) -> PipelineHooks:
    """Hooks that interrupt the training of ``step`` after its first checkpoint, as Ctrl-C would leave it."""

    def event(e: dict) -> None:
        if e.get("event") == "checkpoint":
            raise KeyboardInterrupt

    hooks = PipelineHooks()
    hooks.step_started = lambda s: setattr(hooks, "train_event", event if s == step else (lambda _e: None))
    return hooks


@pytest.mark.slow  # ~3.5 min on 2 cores: two runs interrupted and resumed, a merge, eval of three models
def test_cpt_then_ift_resumes_at_either_stage_and_reports_both(tmp_path, small_steps):
    from forgellm.config.io import load_config
    from forgellm.project.stage_model import StageModel

    project = tmp_path / "httpx-bot"
    for stage in ("cpt-train", "ift-train"):  # interrupted in each stage's training, then the same call again
        with pytest.raises((KeyboardInterrupt, PipelineInterrupted)):
            run_cpt_ift(project, small_steps, _stop_in(stage))
    result = run_cpt_ift(project, small_steps)
    statuses = {s["step"]: s["status"] for s in result.steps}
    assert statuses["plan"] == statuses["cpt-prepare"] == statuses["cpt-train"] == "reused"
    assert statuses["ift-train"] == statuses["eval"] == "done"
    state = json.loads((project / ".forge" / "pipeline.json").read_text())
    runs = state["runs"]
    assert len(list((project / "runs").iterdir())) == 2  # each stage resumed its run, none started over

    config = load_config(project).config
    assert [s.name for s in config.stages] == ["cpt", "ift"]
    cpt_record = StageModel.load(project / "models" / "after-cpt")
    assert cpt_record is not None and cpt_record.run_id == runs["cpt"]
    assert cpt_record.held_out["perplexity_after"] > 0 and cpt_record.held_out["examples"] > 0
    ift_snapshot = yaml.safe_load((project / "runs" / runs["ift"] / "config.yaml").read_text())
    assert ift_snapshot["model"]["ref"] == str(project / "models" / "after-cpt")
    assert ift_snapshot["training"]["stage"] == "sft"
    cpt_snapshot = yaml.safe_load((project / "runs" / runs["cpt"] / "config.yaml").read_text())
    assert cpt_snapshot["training"]["stage"] == "cpt"
    assert ift_snapshot["training"]["learning_rate"] == pytest.approx(
        cpt_snapshot["training"]["learning_rate"] / 2, rel=1e-2
    )

    forgetting = json.loads((project / "reports" / "eval.json").read_text())["summary"]["forgetting"]
    assert forgetting["models"] == ["base", "after CPT", "after IFT"]
    assert all(isinstance(forgetting["losses"][m], float) for m in forgetting["models"])
    # IFT trained on a mixture: the conversations and 25% alpaca, each with held-out rows of its own; the
    # forgetting slice is the general source's prepared test rows.
    ift_stats = json.loads((Path(state["prepared"]["ift"]) / "stats.json").read_text())
    used = {name: entry["train"] for name, entry in ift_stats["sources"].items()}
    assert set(used) == {"conversations", "general"}
    assert abs(used["general"] - 0.25 * (used["general"] + used["conversations"])) <= 1  # largest remainder
    assert ift_stats["sources"]["general"]["test"] > 0
    assert forgetting["slice"]["origin"] == "prepared-general"

    status = runner.invoke(app, ["status", str(project), "--json"])
    assert status.exit_code == 0, status.output[-2000:]
    pipeline = json.loads(status.stdout)["pipeline"]
    assert [s["name"] for s in pipeline["stages"]] == ["cpt", "ift"]
    assert pipeline["stages"][0]["run_id"] == runs["cpt"] and pipeline["stages"][1]["run_id"] == runs["ift"]
    assert pipeline["cpt_perplexity"]["after"] == pytest.approx(cpt_record.held_out["perplexity_after"])
    shown = runner.invoke(app, ["status", str(project)])
    assert "cpt" in shown.output and "ift" in shown.output and "perplexity" in shown.output

    from forgellm.export.source import find_export_source

    assert find_export_source(project).run_id == runs["ift"]  # `forge export` takes the final model


def test_bad_documents_folder(tmp_path, small_steps):
    from dataclasses import replace

    from forgellm.errors import ErrorCode, ForgeError

    empty = tmp_path / "empty-docs"
    empty.mkdir()
    with pytest.raises(ForgeError) as caught:
        run_cpt_ift(tmp_path / "p1", replace(small_steps, docs=empty))
    assert caught.value.code == ErrorCode.DOCS_EMPTY and "empty" in caught.value.message
    binary = tmp_path / "binary-docs"
    binary.mkdir()
    (binary / "manual.pdf").write_bytes(b"%PDF-1.4\x00\x01\x02" * 100)
    (binary / "notes.md").write_bytes(b"\x00\x00garbage\x00" * 200)
    with pytest.raises(ForgeError) as caught:
        run_cpt_ift(tmp_path / "p2", replace(small_steps, docs=binary))
    assert caught.value.code == ErrorCode.DOCS_EMPTY and caught.value.data["binary"] == 2
    assert not (tmp_path / "p2").exists()  # said before anything was created

    from forgellm.pipelines.docs import inventory

    (binary / "guide.md").write_text("# Guide\n\nUse the client.\n", encoding="utf-8")
    found = inventory(binary)
    assert found.documents == ["guide.md"] and sorted(found.binary) == ["manual.pdf", "notes.md"]
    assert found.line() == "1 documents, 2 binary files skipped"


def test_transcripts_without_a_matching_speaker_say_what_they_saw(tmp_path, small_steps):
    from dataclasses import replace

    from forgellm.errors import ForgeError

    chats = tmp_path / "chats"
    chats.mkdir()
    (chats / "a.md").write_text("# Notes\n\nJust some text without any speaker.\nAnother line.\n", encoding="utf-8")
    data = {"data": {"format": "transcript", "recipe": {"transcript": {"speakers": {"user": ["## kekyo"],
            "assistant": ["## chatgpt"]}}}}}  # fmt: skip
    project = tmp_path / "p"
    project.mkdir()
    (project / "forge.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ForgeError) as caught:
        run_cpt_ift(project, replace(small_steps, conversations=chats, general=None))
    text = caught.value.message + " " + (caught.value.fix or "") + " ".join(caught.value.details or [])
    assert "Just some text" in text and "speakers" in text and not any((project / "runs").iterdir())


def test_conversations_with_no_speaker_label_at_all_are_refused_with_their_first_lines(tmp_path, small_steps):
    from dataclasses import replace

    from forgellm.errors import ErrorCode, ForgeError

    chats = tmp_path / "chats"
    chats.mkdir()
    (chats / "a.md").write_text("Some plain notes.\n\nNobody speaks here at all.\n", encoding="utf-8")
    with pytest.raises(ForgeError) as caught:
        run_cpt_ift(tmp_path / "p", replace(small_steps, conversations=chats, general=None))
    assert caught.value.code == ErrorCode.DATA_FORMAT_INVALID
    assert "Some plain notes." in caught.value.message and "speakers:" in caught.value.fix
