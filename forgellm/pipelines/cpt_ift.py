"""`forge pipeline cpt-ift DOCS CONVERSATIONS "GOAL"`: continued pre-training on a folder of domain documents,
then instruction tuning on conversations on top of it, then eval with forgetting measured.

Steps, each recorded in .forge/pipeline.json when finished (keyed by the inputs, like ignite's state):
  plan        forge.yaml planned for the goal on the conversations, then the two `stages:` written at its end
              (cpt: documents, training.stage cpt; ift: conversations, post-CPT defaults; pipelines/stages.py)
  cpt-prepare the documents prepared with the cpt stage's config (document boundaries, EOS, overlap)
  cpt-train   the CPT run (best checkpoint = lowest loss on held-out documents, the val split)
  cpt-merge   held-out perplexity before/after on that val split, the best adapter merged into models/cpt/
              (the StageModel record), and the ift stage's model.ref pointed at it
  ift-prepare the conversations prepared with the ift stage's config
  ift-train   the IFT run, on the merged CPT model
  eval        the IFT run against its base (the CPT model), with the general loss of base, CPT and IFT
Running the same command after Ctrl-C or kill -9 skips finished steps; an unfinished run resumes from its
last checkpoint (its id is recorded as soon as it starts). `forge export` then takes the IFT run (newest).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgellm.errors import ErrorCode, ForgeError
from forgellm.pipelines.stages import CPT, IFT, SMALL_DATA
from forgellm.project.layout import ProjectLayout

STEPS = ("plan", "cpt-prepare", "cpt-train", "cpt-merge", "ift-prepare", "ift-train", "eval")
HELD_OUT_EXAMPLES = 200  # val chunks scored for the CPT perplexity (a seeded choice)


@dataclass(frozen=True)
class PipelineOptions:
    docs: Path
    conversations: Path
    goal: str
    general: Path | None = None
    model: str | None = None
    max_steps: int | None = None
    epochs: float | None = None
    time_budget: float | None = None
    advisor: str | None = None

    def key(self) -> str:
        """What decides the work: the inputs' identity and the flags that change the plan."""

        def ident(path: Path | None) -> list[Any]:
            if path is None:
                return []
            stat = path.stat()
            return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]

        flags = [self.goal, self.model, self.max_steps, self.epochs, self.time_budget, self.advisor]
        blob = [ident(self.docs), ident(self.conversations), ident(self.general), flags]
        return hashlib.sha256(json.dumps(blob, default=str).encode()).hexdigest()[:16]


@dataclass
class PipelineHooks:
    step_started: Callable[[str], None] = lambda _step: None
    step_finished: Callable[[str, str, str], None] = lambda _step, _status, _decision: None  # step, done|reused
    progress: Callable[[str], None] = lambda _message: None
    train_event: Callable[[dict[str, Any]], None] = lambda _event: None


@dataclass
class PipelineResult:
    project_dir: Path
    steps: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"project_dir": str(self.project_dir), "steps": self.steps, "runs": self.state.get("runs", {}),
                "cpt": self.state.get("cpt"), "forgetting": self.state.get("forgetting")}  # fmt: skip


class PipelineInterrupted(Exception):
    def __init__(self, step: str, how: str) -> None:
        super().__init__(step)
        self.step, self.how = step, how


def check_inputs(options: PipelineOptions) -> Any:
    """Bad input said before anything is created: the goal, the conversations, the documents folder."""
    from forgellm.pipelines.docs import inventory

    if not options.goal.strip():
        raise ForgeError("The pipeline needs a goal: what the model should do, in plain words.",
                         fix='forge pipeline cpt-ift docs/ chats/ "Answer questions about our product"',
                         code=ErrorCode.USAGE_INVALID)  # fmt: skip
    for what, path in (("conversations", options.conversations), ("general data", options.general)):
        if path is not None and not path.exists():
            raise ForgeError(f"The {what} {path} do not exist.", fix="Check the path.",
                             code=ErrorCode.FILE_NOT_FOUND, data={"path": str(path)})  # fmt: skip
    return inventory(options.docs)


def run_cpt_ift(project_dir: Path, options: PipelineOptions, hooks: PipelineHooks | None = None) -> PipelineResult:
    """Every step not yet finished for these inputs (module docstring), under the project lock."""
    from forgellm.project.lock import ProjectLock

    hooks = hooks or PipelineHooks()
    resolved = {k: (v.expanduser().resolve() if isinstance(v, Path) else v) for k, v in options.__dict__.items()}
    options = PipelineOptions(**resolved)
    docs = check_inputs(options)
    project_dir = Path(project_dir).expanduser().resolve()
    project_dir.mkdir(parents=True, exist_ok=True)
    with ProjectLock(project_dir, "pipeline") as lock:
        lock.acquire()
        return _run(ProjectLayout(project_dir), options, hooks, docs)


def _run(layout: ProjectLayout, options: PipelineOptions, hooks: PipelineHooks, docs: Any) -> PipelineResult:
    from forgellm.files import atomic_write_text, read_json_object

    state = read_json_object(layout.pipeline_state)
    if state.get("key") != options.key():
        state = {"key": options.key(), "docs": str(options.docs), "conversations": str(options.conversations),
                 "general": str(options.general) if options.general else None, "goal": options.goal,
                 "done": {}, "runs": {}}  # fmt: skip
    state["docs_inventory"] = {"documents": len(docs.documents), "binary": docs.binary, "line": docs.line()}

    def save() -> None:
        atomic_write_text(layout.pipeline_state, json.dumps(state, indent=2, default=str) + "\n")

    result = PipelineResult(layout.root, state=state)
    for step in STEPS:
        if step in state["done"]:
            result.steps.append({"step": step, "status": "reused", "decision": state["done"][step]})
            hooks.step_finished(step, "reused", state["done"][step])
            continue
        hooks.step_started(step)
        started = time.perf_counter()
        decision = _STEP_FUNCTIONS[step](layout, options, hooks, state, save)
        state["done"][step] = decision
        save()
        result.steps.append({"step": step, "status": "done", "decision": decision,
                             "seconds": round(time.perf_counter() - started, 2)})  # fmt: skip
        hooks.step_finished(step, "done", decision)
    return result


# ------------------------------------------------------------------------------------------------ steps


def _written(layout: ProjectLayout) -> Any:
    from forgellm.config.io import load_config

    return load_config(layout.config_file, environ={}).config


def _effective(layout: ProjectLayout, stage: str) -> Any:
    """The stage's config with FORGE_* overrides, as a command takes it."""
    from forgellm.config.io import load_config
    from forgellm.config.stages import stage_config

    return stage_config(load_config(layout.config_file).config, stage)


def _plan(layout: ProjectLayout, options: PipelineOptions, hooks: PipelineHooks, state: dict, save: Any) -> str:
    from forgellm.config.io import save_config
    from forgellm.data.prepare.detect import detect_data_format
    from forgellm.pipelines.stages import with_stages
    from forgellm.planning import PlanOverrides, make_plan
    from forgellm.project import advisor_settings, init_project

    init_project(layout.root, advisor=advisor_settings(options.advisor) if options.advisor else None)
    before = _written(layout)
    flags = PlanOverrides(options.model, None, options.epochs, None, options.max_steps, options.time_budget)
    plan = make_plan(layout, _written(layout), options.goal, data=options.conversations, overrides=flags,
                     provider=options.advisor, progress=hooks.progress)  # fmt: skip
    # The conversations' format and recipe (transcript speakers ...) detected now, written into the ift
    # stage, so prepare never writes a detection into the project's own data section.
    if before.data.format != "auto":  # the user's own reading of the conversations (speakers ...) wins
        d = before.data
    else:
        d = detect_data_format(layout, options.conversations, plan.config)[0].data
    if d.format == "text":
        raise _no_conversations(options.conversations)
    _check_conversations(options.conversations, d)
    detected = {"format": d.format, "recipe": d.recipe.model_dump(mode="json", exclude_defaults=True)}
    if d.rationale:
        detected["rationale"] = d.rationale
    small = _records(options.conversations) < SMALL_DATA
    config = with_stages(plan.config, options.docs, options.conversations, detected, options.general, small)
    save_config(config, layout.config_file)
    ift = next(s for s in config.stages if s.name == IFT)
    return f"{plan.model_name}, {config.training.method.upper()}; stages cpt -> ift. IFT: {ift.rationale}"


def _records(path: Path) -> int:
    from forgellm.data.read.readers import open_dataset, sample_records

    return len(sample_records(open_dataset(path), SMALL_DATA))


def _check_conversations(path: Path, data: Any) -> None:
    """The conversations read with their recipe before CPT spends its time: when not one sampled record
    gives a conversation, prepare's own reason (for transcripts: the first lines and a speaker setting) now."""
    from forgellm.data.prepare.recipe import to_example
    from forgellm.data.read.readers import open_dataset, sample_records
    from forgellm.data.read.records import RecipeError

    reasons = []
    for record in sample_records(open_dataset(path), 50):
        try:
            if to_example(record, data.format, data.recipe).messages:
                return
        except RecipeError as exc:
            reasons.append(str(exc))
    raise ForgeError(
        f"No conversation could be read from {path.name} as {data.format}: {reasons[0] if reasons else 'no record'}",
        fix="Fix data.format / data.recipe in forge.yaml (for transcripts, data.recipe.transcript.speakers), "
        "then run the same command again.",
        code=ErrorCode.DATA_FORMAT_INVALID,
        data={"path": str(path)},
    )


def _no_conversations(path: Path) -> ForgeError:
    """The conversations read as plain documents: no speaker label was recognised in them."""
    from forgellm.data.read.readers import open_dataset, sample_records

    records = sample_records(open_dataset(path), 1)
    text = str(records[0].fields.get("text", "")) if records else ""
    first = [line for line in text.splitlines() if line.strip()][:5]
    return ForgeError(
        f"No conversation was found in {path.name}: no line starts with a speaker label, so it reads as plain "
        "documents. Its first lines: " + " | ".join(first),
        fix="Say who speaks in forge.yaml, e.g. data: {format: transcript, recipe: {transcript: {speakers: "
        "{user: ['## kekyo'], assistant: ['## chatgpt']}}}} (a line starting with a label opens that turn), "
        "then run the same command again.",
        code=ErrorCode.DATA_FORMAT_INVALID,
        data={"path": str(path)},
    )


def _prepare(stage: str, source: Callable[[PipelineOptions], Path]) -> Callable[..., str]:
    def step(layout: ProjectLayout, options: PipelineOptions, hooks: PipelineHooks, state: dict, save: Any) -> str:
        from forgellm.data.prepare.run import PrepareHooks, prepare_dataset

        config = _effective(layout, stage)
        # A stage with data.sources (IFT mixed with general data) prepares its mixture: no single input.
        data = None if config.data.sources else source(options)
        result = prepare_dataset(layout, config, data, hooks=PrepareHooks(step=hooks.progress))
        if data is None:
            from forgellm.config.io import save_config
            from forgellm.pipelines.stages import with_stage_sources

            save_config(with_stage_sources(_written(layout), stage, result.config.data.sources), layout.config_file)
        state.setdefault("prepared", {})[stage] = str(result.output_dir)
        counts = ", ".join(f"{name} {n:,}" for name, n in result.stats.examples().items())
        extra = f" ({state['docs_inventory']['line']})" if stage == CPT else ""
        return f"{counts} examples{extra}"

    return step


def _train(stage: str) -> Callable[..., str]:
    def step(layout: ProjectLayout, options: PipelineOptions, hooks: PipelineHooks, state: dict, save: Any) -> str:
        from forgellm.project.prepared import PreparedData
        from forgellm.project.run_record import run_status
        from forgellm.training.supervisor import run_training

        run_id = state["runs"].get(stage)
        resume = run_id if run_id and run_status(layout.run(run_id)) != "completed" else None
        if run_id and resume is None:
            return f"run {run_id} completed"

        def remember(event: dict[str, Any]) -> None:
            if event.get("event") == "run" and event.get("run_id"):  # recorded at once: a kill must find it
                state["runs"][stage] = event["run_id"]
                save()
            hooks.train_event(event)

        config = _effective(layout, stage)
        prepared = PreparedData.load(Path(state["prepared"][stage]))
        try:
            result = run_training(layout, config, prepared=prepared, resume=resume, on_event=remember)
        except ForgeError as exc:
            if resume and exc.code == ErrorCode.NOTHING_TO_RESUME:  # it finished just before the kill
                return f"run {run_id} completed"
            raise
        if result.status != "completed":
            raise PipelineInterrupted(f"{stage}-train", f"the same command resumes run {result.run_id}")
        best = result.summary.best_val_loss if result.summary else None
        return f"run {result.run_id}: best val loss {best:.4f}" if isinstance(best, float) else f"run {result.run_id}"

    return step


def _cpt_merge(layout: ProjectLayout, options: PipelineOptions, hooks: PipelineHooks, state: dict, save: Any) -> str:
    from forgellm.config.io import save_config
    from forgellm.pipelines.merge import merge_stage_result
    from forgellm.pipelines.stages import with_ift_base

    record = merge_stage_result(layout, CPT, state["runs"][CPT], HELD_OUT_EXAMPLES, hooks.progress)
    save_config(with_ift_base(_written(layout), Path(record.folder)), layout.config_file)
    held = record.held_out
    state["cpt"] = held
    return (
        f"held-out perplexity on {held.get('examples')} val chunks of the documents: "
        f"{held.get('perplexity_before'):.2f} -> {held.get('perplexity_after'):.2f}; merged into "
        f"{Path(record.folder).relative_to(layout.root)}/ (the IFT base)"
    )


def _eval(layout: ProjectLayout, options: PipelineOptions, hooks: PipelineHooks, state: dict, save: Any) -> str:
    from forgellm.evaluation import evaluate_run

    result = evaluate_run(layout, _effective(layout, IFT), state["runs"][IFT], samples=8, max_examples=64,
                          general=options.general, progress=hooks.progress)  # fmt: skip
    summary = result.to_dict()["summary"]
    forgetting = summary.get("forgetting") or {}
    state["forgetting"] = forgetting
    base, tuned = summary["base"].get("loss"), summary["tuned"].get("loss")
    figures = f"test loss {base:.3f} -> {tuned:.3f}" if base is not None and tuned is not None else "test loss –"
    return f"{figures}; {forgetting.get('message', '')}".strip("; ")


_STEP_FUNCTIONS: dict[str, Callable[..., str]] = {
    "plan": _plan,
    "cpt-prepare": _prepare(CPT, lambda o: o.docs),
    "cpt-train": _train(CPT),
    "cpt-merge": _cpt_merge,
    "ift-prepare": _prepare(IFT, lambda o: o.conversations),
    "ift-train": _train(IFT),
    "eval": _eval,
}
