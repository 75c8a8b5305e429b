"""`forge ignite`: init -> study -> plan -> prepare -> train -> eval -> export, in one project, resumable.

Each stage calls the same library function as its own command, with the project's layout and config, and
hands its record to the next (`Carried`): init -> (layout, config), plan -> the config it wrote, prepare ->
PreparedData, train -> RunRecord, which eval and export take. What finished is recorded in
.forge/ignite.json (written atomically after each stage), keyed by the inputs that decide the work
(data file identity, goal, flags): running the same command again after Ctrl-C or `kill -9` skips
the finished stages and lets the unfinished one resume itself (prepare continues its chunks, train
its last checkpoint). Different data, goal or flags start over from the study; the project stays.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgellm.errors import ErrorCode, ForgeError
from forgellm.hardware.disk import bytes_per_param, require_free_space
from forgellm.project.layout import ProjectLayout
from forgellm.runtime.stages import in_container, training_runner

if TYPE_CHECKING:
    from forgellm.config.schema import ForgeConfig
    from forgellm.project.prepared import PreparedData
    from forgellm.project.run_record import RunRecord

STAGES = ("init", "study", "plan", "prepare", "train", "eval", "export")
# ignite keeps evaluation shorter than `forge eval` (64 answers): 32 answers still give the stop rate a
# 95% interval of about ±15 points; None sizes the answer limit by the test split's reference answers.
EVAL_SAMPLES, EVAL_MAX_EXAMPLES, EVAL_MAX_NEW_TOKENS = 32, 64, None


@dataclass(frozen=True)
class IgniteOptions:
    data: Path
    goal: str
    model: str | None = None
    epochs: float | None = None
    batch_size: int | None = None
    max_steps: int | None = None
    advisor: str | None = None
    export: bool = True
    dry_run: bool = False
    yes: bool = False
    time_budget: float | None = None  # minutes of training
    runtime: str | None = None  # --runtime (None: forge.yaml's runtime:); not part of the key: same work anywhere
    parallel: dict[str, Any] | None = None  # --distributed/--gpus/--nodes; like runtime, not part of the key
    launch: Any = None  # training.launch.LaunchOptions: this machine's place in a multi-node run

    def key(self) -> str:
        """What decides the work: the data file's identity, the goal and every flag that changes the plan."""
        stat = self.data.stat()
        identity = [str(self.data.resolve()), stat.st_size, stat.st_mtime_ns]
        flags = [self.goal, self.model, self.epochs, self.batch_size, self.max_steps, self.advisor, self.export]
        if self.time_budget is not None:
            flags.append(self.time_budget)
        return hashlib.sha256(json.dumps([identity, flags], default=str).encode()).hexdigest()[:16]


@dataclass
class StageOutcome:
    stage: str
    status: str  # done | reused (finished in an earlier ignite) | skipped
    seconds: float
    decision: str  # one line: what it decided and why
    details: dict[str, Any] = field(default_factory=dict)
    result: Any = None  # the stage's own result object (for the CLI's renderers), not saved


@dataclass
class IgniteHooks:
    """How the CLI shows and steers the run; the library prints nothing."""

    stage_started: Callable[[str], None] = lambda _stage: None
    stage_finished: Callable[[StageOutcome], None] = lambda _outcome: None
    confirm: Callable[[str], bool] = lambda _question: True
    step: Callable[[str], None] = lambda _message: None  # short progress lines inside a stage
    rows: Callable[[int, int | None], None] = lambda _done, _total: None  # study/prepare rows
    train_event: Callable[[dict[str, Any]], None] = lambda _event: None
    export_progress: Any = None  # forgellm.export.pipeline.ExportProgress


@dataclass
class IgniteResult:
    project_dir: Path
    outcomes: list[StageOutcome]
    stopped_after: str | None = None  # "plan" for --dry-run or a declined confirmation
    state: dict[str, Any] = field(default_factory=dict)

    def outcome(self, stage: str) -> StageOutcome | None:
        return next((o for o in self.outcomes if o.stage == stage), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "project_dir": str(self.project_dir),
            "stopped_after": self.stopped_after,
            "stages": [
                {
                    "stage": o.stage,
                    "status": o.status,
                    "seconds": round(o.seconds, 2),
                    "decision": o.decision,
                    **o.details,
                }
                for o in self.outcomes
            ],
        }


@dataclass
class Carried:
    """What each stage hands the next inside one ignite: records, never a folder to search again.
    forge.yaml is read at most once per ignite (by init, or when init was reused); plan's and prepare's
    changes to it are carried on from what they return."""

    layout: ProjectLayout
    written: ForgeConfig | None = None  # forge.yaml as written (plan starts from it and rewrites it)
    config: ForgeConfig | None = None  # the same with FORGE_* overrides: what the later stages take
    prepared: PreparedData | None = None  # what prepare published: train trains on it
    run: RunRecord | None = None  # the run train finished: eval and export take it
    runtime: Any = None  # the RuntimeChoice, made by the first stage that runs something (runtime/stages.py)

    def set_written(self, written: ForgeConfig) -> None:
        from forgellm.config.io import with_environment

        self.written, self.config = written, with_environment(written)

    def read_written(self) -> ForgeConfig | None:
        """forge.yaml from disk: the one read of an ignite whose init did not just write it."""
        from forgellm.config.io import load_config

        if self.written is None and self.layout.config_file.is_file():
            self.set_written(load_config(self.layout.config_file, environ={}).config)
        return self.written


# ------------------------------------------------------------------------------------------------ state


def _load_state(project_dir: Path) -> dict[str, Any]:
    from forgellm.files import read_json_object

    return read_json_object(ProjectLayout(project_dir).ignite_state)


def _save_state(project_dir: Path, state: dict[str, Any]) -> None:
    from forgellm.files import atomic_write_text

    atomic_write_text(ProjectLayout(project_dir).ignite_state, json.dumps(state, indent=2, default=str) + "\n")


# ------------------------------------------------------------------------------------------------ checks


def check_inputs(options: IgniteOptions) -> None:
    """Bad input said before anything is created."""
    if not options.goal or not options.goal.strip():
        raise ForgeError(
            "ignite needs a goal: what the model should do, in plain words.",
            fix='forge ignite data.csv "Make a customer support bot"',
            code=ErrorCode.USAGE_INVALID,
        )
    if not options.data.exists():
        raise ForgeError(
            f"The data {options.data} does not exist.",
            fix="Give the path of your data: a CSV, JSON/JSONL, Parquet, text file or folder "
            '(e.g. forge ignite examples/customer_support.csv "Make a customer support bot").',
            code=ErrorCode.FILE_NOT_FOUND, data={"path": str(options.data)},
        )


def check_model_disk_space(config: Any) -> None:
    """A model still to download or convert must fit on the cache's disk: said before starting."""
    from forgellm.models.catalog import find_by_hub_id, get_spec, is_known_alias
    from forgellm.models.resolve import is_materialized, resolve_model

    ref = config.model.ref
    source = resolve_model(ref)
    if is_materialized(source):
        return
    spec = get_spec(ref) if is_known_alias(ref) else find_by_hub_id(ref)
    if spec is None:
        return  # a local folder or unknown hub model: nothing to download that we can size
    from forgellm.config.settings import model_cache_dir

    if source.kind == "hub":
        from huggingface_hub import constants

        cache = Path(constants.HF_HUB_CACHE)  # downloads land in the hub's own cache
    else:
        cache = model_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    # A hub model downloads in bf16; a bundled GGUF converts to fp32. 20% more for tokenizer and temporary files.
    needed = spec.params * bytes_per_param("f32" if source.kind == "bundled" else "bf16") * 1.2
    require_free_space(
        cache,
        needed,
        f"the weights of {spec.key}",
        "Free some disk space, point FORGE_CACHE_DIR at a bigger disk, or use a smaller model (--model smollm2-135m).",
    )


# ------------------------------------------------------------------------------------------------ stages


def _stage_init(carried: Carried, options: IgniteOptions, hooks: IgniteHooks) -> StageOutcome:
    from forgellm.project import advisor_settings, init_project

    # The project's name names its exports and Ollama model: the folder's name, as `forge init` does.
    advisor = advisor_settings(options.advisor) if options.advisor else None
    result = init_project(carried.layout.root, advisor=advisor)
    if result.config is not None:  # what init wrote or found: nothing to read again
        carried.set_written(result.config)
    else:  # an invalid forge.yaml: reading it says what is wrong
        carried.read_written()
    created = list(result.created)
    decision = "created the project folder" if created else "project folder already set up"
    return StageOutcome("init", "done", 0.0, decision, {"created": created})


def _stage_study(carried: Carried, options: IgniteOptions, hooks: IgniteHooks) -> StageOutcome:
    from forgellm.data.study.run import study_file

    project_dir = carried.layout.root
    run = study_file(carried.layout, carried.config, options.data, step=hooks.step, rows=hooks.rows)
    findings = run.report.to_dict().get("findings", [])
    serious = [f for f in findings if f.get("severity") in ("error", "warning")]
    report = run.html_path.relative_to(project_dir) if run.html_path.is_relative_to(project_dir) else run.html_path
    fits = run.detection.get("fits") is not False
    shape = f"format {run.detection['format']}" if fits else "no reading of the file fits (the plan says what to set)"
    decision = f"{shape}; {len(findings)} findings ({len(serious)} to look at); {report}"
    details = {"format": run.detection["format"], "report": str(run.html_path)}
    return StageOutcome("study", "done", 0.0, decision, details, run)


def _stage_plan(carried: Carried, options: IgniteOptions, hooks: IgniteHooks, fresh_key: bool) -> StageOutcome:
    from forgellm.planning import PlanOverrides, make_plan

    flags = PlanOverrides(
        options.model, None, options.epochs, options.batch_size, options.max_steps, options.time_budget
    )
    written = carried.read_written()

    def plan(dry_run: bool):
        return make_plan(
            carried.layout,
            written,
            options.goal,
            data=options.data,
            overrides=flags,
            provider=options.advisor,
            dry_run=dry_run,
            progress=hooks.step,
        )

    previous = written.model.ref if written is not None and written.data.source else None  # an earlier plan's
    if options.dry_run:
        result = plan(True)
        return StageOutcome("plan", "done", 0.0, _plan_decision(result), _plan_details(result), result)
    if previous is not None and fresh_key:
        preview = plan(True)
        new_model = preview.config.model.ref
        if (
            new_model != previous
            and not options.yes
            and not hooks.confirm(f"forge.yaml here plans {previous}; this ignite plans {new_model}. Replace the plan?")
        ):
            raise ForgeError(
                f"Kept the existing plan for {previous}; nothing was changed.",
                fix=f"Run ignite in another folder, pass --model {previous} to keep the model, or --yes to replace it.",
                code=ErrorCode.DECLINED,
            )
    result = plan(False)
    carried.set_written(result.config)  # the plan it wrote, carried on rather than read back
    return StageOutcome("plan", "done", 0.0, _plan_decision(result), _plan_details(result), result)


def _plan_decision(result: Any) -> str:
    t = result.config.training
    steps = f"{t.max_steps} steps" if t.max_steps else f"{t.epochs:g} epochs"
    why = result.why_model.rstrip(".")
    return (
        f"{result.model_name}, {t.method.upper()}, lr {t.learning_rate:g}, {steps}, "
        f"micro-batch {t.micro_batch_size} x {t.gradient_accumulation}, max_length {result.config.model.max_length}"
        f" — {why}"
    )


def _plan_details(result: Any) -> dict[str, Any]:
    t = result.config.training
    return {
        "model": result.config.model.ref,
        "method": t.method,
        "learning_rate": t.learning_rate,
        "max_steps": t.max_steps,
        "epochs": t.epochs,
        "advisor": result.advisor,
    }


def _stage_prepare(carried: Carried, options: IgniteOptions, hooks: IgniteHooks) -> StageOutcome:
    from forgellm.data.prepare.run import PrepareHooks, prepare_dataset

    check_model_disk_space(carried.config)
    progress = PrepareHooks(step=hooks.step, rows=hooks.rows)
    in_container(carried, options, hooks, "prepare", [str(options.data)])  # then the line below finds its data
    result = prepare_dataset(carried.layout, carried.config, options.data, hooks=progress)
    carried.prepared, carried.config = result.prepared, result.config  # detection may have filled data.format
    counts = ", ".join(f"{name} {examples:,}" for name, examples in result.stats.examples().items())
    rejected = result.stats.rejected
    decision = f"{counts} examples" + (f"; {rejected:,} rows rejected (see rejects.jsonl)" if rejected else "")
    if result.already_prepared:
        decision += " (already prepared)"
    return StageOutcome("prepare", "done", 0.0, decision, {"output_dir": str(result.output_dir)}, result)


def _stage_train(carried: Carried, options: IgniteOptions, hooks: IgniteHooks, state: dict[str, Any]) -> StageOutcome:
    from forgellm.project.run_record import RunRecord, run_status
    from forgellm.training.supervisor import run_training

    project_dir = carried.layout.root
    run_id = state.get("train_run")
    resume = run_id if run_id and run_status(carried.layout.run(run_id)) != "completed" else None

    def remember(event: dict[str, Any]) -> None:
        if event.get("event") == "run" and event.get("run_id"):  # record it at once: a kill must find it
            state["train_run"] = event["run_id"]
            _save_state(project_dir, state)
        hooks.train_event(event)

    try:
        result = run_training(
            carried.layout, carried.config, prepared=carried.prepared, resume=resume, on_event=remember,
            parallel=options.parallel, launch=options.launch, **training_runner(carried, options, hooks),
        )  # a resumed run trains with its own snapshot, not with forge.yaml
    except ForgeError as exc:
        if resume and exc.code == ErrorCode.NOTHING_TO_RESUME:  # it finished just before the kill
            result = None
        else:
            raise
    if result is not None and result.status != "completed":
        raise IgniteInterrupted("train", f"forge ignite resumes run {result.run_id} from its last checkpoint")
    carried.run = result.record if result is not None else RunRecord.load(carried.layout.run(state["train_run"]))
    summary = result.summary if result is not None else None
    best = summary.best_val_loss if summary else None
    steps = summary.steps if summary and summary.steps is not None else "?"
    decision = (
        f"run {state['train_run']}: {steps} steps, best val loss {best:.4f}"
        if summary and isinstance(best, (int, float))
        else f"run {state.get('train_run')} completed"
    )
    recoveries = summary.recoveries if summary else []
    if recoveries:
        decision += f", healed {len(recoveries)} failure(s)"
    return StageOutcome("train", "done", 0.0, decision, {"run_id": state.get("train_run")}, result)


def _stage_eval(carried: Carried, options: IgniteOptions, hooks: IgniteHooks, state: dict[str, Any]) -> StageOutcome:
    from forgellm.evaluation import evaluate_run

    result = evaluate_run(
        carried.layout,
        carried.config,
        carried.run,
        samples=EVAL_SAMPLES,
        max_examples=EVAL_MAX_EXAMPLES,
        max_new_tokens=EVAL_MAX_NEW_TOKENS,
        progress=None,
    )
    summary = result.to_dict()["summary"]
    base, tuned = summary.get("base", {}), summary.get("tuned", {})
    relative = (summary.get("loss_change") or {}).get("relative")
    answers = summary.get("samples_generated", 0)

    def fmt(value: Any, spec: str) -> str:
        return format(value, spec) if isinstance(value, (int, float)) else "–"

    verdict = {"better": "better than the base", "worse": "worse than the base"}.get(
        (summary.get("verdict") or {}).get("status", ""), "not meaningfully better than the base"
    )
    decision = (
        f"{verdict}: test loss {fmt(base.get('loss'), '.3f')} -> {fmt(tuned.get('loss'), '.3f')} "
        f"({fmt(relative, '+.1%')}), stop rate {fmt(base.get('stop_rate'), '.0%')} -> "
        f"{fmt(tuned.get('stop_rate'), '.0%')} of {answers} answer{'' if answers == 1 else 's'}"
    )
    return StageOutcome("eval", "done", 0.0, decision, {"summary": summary}, result)


def _stage_export(carried: Carried, options: IgniteOptions, hooks: IgniteHooks, state: dict[str, Any]) -> StageOutcome:
    from forgellm.export.pipeline import export_model

    if in_container(carried, options, hooks, "export", ["--run", carried.run.run_id]):  # type: ignore[union-attr]
        return StageOutcome("export", "done", 0.0, f"in Docker ({carried.runtime.image}): exports/", {}, None)
    result = export_model(carried.layout, carried.config, run=carried.run, progress=hooks.export_progress)
    files = ", ".join(p.name for p in result.gguf_files.values())
    ollama = result.ollama
    registered = f"; created {ollama.model} in Ollama" if ollama.registered else ""
    decision = f"exports/{result.name}/: merged/, {files}, Modelfile, README.md{registered}"
    return StageOutcome("export", "done", 0.0, decision, {"folder": str(result.folder)}, result)


class IgniteInterrupted(Exception):
    """A stage stopped on the user's request (Ctrl-C); running the same ignite again resumes it."""

    def __init__(self, stage: str, how: str) -> None:
        super().__init__(stage)
        self.stage, self.how = stage, how


# ------------------------------------------------------------------------------------------------ the run


def ignite(project_dir: Path, options: IgniteOptions, hooks: IgniteHooks | None = None) -> IgniteResult:
    """Run every stage not yet finished for these inputs (see the module docstring), holding the project
    lock throughout: the stages take it again inside (it is re-entrant), nobody else in between."""
    from forgellm.project.lock import ProjectLock

    check_inputs(options)  # bad input is said before the lock creates anything
    if options.dry_run:
        return _ignite(project_dir, options, hooks)
    with ProjectLock(Path(project_dir), "ignite") as lock:
        lock.acquire()
        return _ignite(project_dir, options, hooks)


def _ignite(project_dir: Path, options: IgniteOptions, hooks: IgniteHooks | None) -> IgniteResult:
    hooks = hooks or IgniteHooks()
    project_dir = Path(project_dir).expanduser().resolve()
    carried = Carried(ProjectLayout(project_dir))
    options = IgniteOptions(**{**options.__dict__, "data": options.data.expanduser().resolve()})
    if options.dry_run:  # the plan, computed without writing anything, and nothing else
        hooks.stage_started("plan")
        started = time.perf_counter()
        outcome = _stage_plan(carried, options, hooks, fresh_key=False)
        outcome.seconds = time.perf_counter() - started
        hooks.stage_finished(outcome)
        return IgniteResult(project_dir, [outcome], stopped_after="plan")
    key = options.key()
    state = _load_state(project_dir)
    fresh = state.get("key") != key
    if fresh:
        state = {"key": key, "data": str(options.data), "goal": options.goal, "done": {}}
    result = IgniteResult(project_dir, [], state=state)
    for stage in (s for s in STAGES if options.export or s != "export"):
        if stage in state["done"]:
            record = state["done"][stage]
            _reload(stage, carried, record.get("details", {}), state)
            result.outcomes.append(StageOutcome(stage, "reused", 0.0, record["decision"], record.get("details", {})))
            continue
        if stage == "train" and not options.yes and not hooks.confirm("Start training with this plan?"):
            result.stopped_after = "plan"
            break
        hooks.stage_started(stage)
        started = time.perf_counter()
        outcome = _run_stage(stage, carried, options, hooks, state, fresh)
        outcome.seconds = time.perf_counter() - started
        result.outcomes.append(outcome)
        hooks.stage_finished(outcome)
        state["done"][stage] = {
            "decision": outcome.decision,
            "seconds": round(outcome.seconds, 2),
            "details": outcome.details,
        }
        _save_state(project_dir, state)
    return result


def _reload(stage: str, carried: Carried, details: dict[str, Any], state: dict[str, Any]) -> None:
    """A stage finished by an earlier ignite: its record, read from disk by the record's own reader."""
    from forgellm.project.prepared import PreparedData
    from forgellm.project.run_record import RunRecord

    if stage == "init":
        carried.read_written()
    elif stage == "prepare" and details.get("output_dir"):
        carried.prepared = PreparedData.load(Path(details["output_dir"]))
    elif stage == "train" and state.get("train_run"):
        carried.run = RunRecord.load(carried.layout.run(state["train_run"]))


def _run_stage(
    stage: str, carried: Carried, options: IgniteOptions, hooks: IgniteHooks, state: dict[str, Any], fresh: bool
) -> StageOutcome:
    if stage == "init":
        return _stage_init(carried, options, hooks)
    if stage == "study":
        return _stage_study(carried, options, hooks)
    if stage == "plan":
        return _stage_plan(carried, options, hooks, fresh)
    if stage == "prepare":
        return _stage_prepare(carried, options, hooks)
    if stage == "train":
        return _stage_train(carried, options, hooks, state)
    if stage == "eval":
        return _stage_eval(carried, options, hooks, state)
    return _stage_export(carried, options, hooks, state)
