"""`forge status` for a multi-stage project: each stage (from forge.yaml's `stages:`), its run and state, the
CPT held-out perplexity (the StageModel record) and the forgetting figure (eval.json). Reads records only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forgellm.project.eval_record import EvalRecord
from forgellm.project.layout import ProjectLayout
from forgellm.project.record_io import read_object
from forgellm.project.run_record import run_status
from forgellm.project.stage_model import StageModel


def pipeline_status(root: Path, config: Any) -> dict[str, Any] | None:
    """None for a single-stage project."""
    layout = ProjectLayout(root)
    state = read_object(layout.pipeline_state) or {}
    names = [s.name for s in config.stages] if config is not None else []
    if not names:
        return None
    runs = state.get("runs") if isinstance(state.get("runs"), dict) else {}
    done = state.get("done") if isinstance(state.get("done"), dict) else {}
    stages = []
    for name in names:
        run_id = runs.get(name) if isinstance(runs.get(name), str) else None
        status = run_status(layout.run(run_id)) if run_id and layout.run(run_id).folder.is_dir() else "not started"
        stages.append({"name": name, "run_id": run_id, "state": status})
    record = StageModel.load(layout.stage_model("cpt"))
    held = record.held_out if record is not None else {}
    perplexity = (
        {
            "before": held.get("perplexity_before"),
            "after": held.get("perplexity_after"),
            "examples": held.get("examples"),
        }
        if record is not None
        else None
    )
    evaluation = EvalRecord.load(layout)
    forgetting = evaluation.summary.get("forgetting") if evaluation is not None else None
    steps = [step for step in ("plan", "cpt-prepare", "cpt-train", "cpt-merge", "ift-prepare", "ift-train", "eval")]
    current = next((s for s in steps if s not in done), None) if state else "plan"
    return {
        "stages": stages,
        "step": current,  # the next step to run (None: all done)
        "cpt_perplexity": perplexity,
        "cpt_model": record.folder if record is not None else None,
        "forgetting": forgetting if isinstance(forgetting, dict) else None,
        "inputs": {k: state.get(k) for k in ("docs", "conversations", "general", "goal")} if state else None,
    }
