"""`forge train`'s supervisor: starts the worker process, records its events, heals its failures.

Each attempt is one worker process (protocol.py). Its stdout events go to metrics.jsonl (with the
time and attempt number) and to ``on_event`` for a live display; its stderr goes to
logs/worker-<attempt>.log. When an attempt fails, healing.py decides what the next one changes and
the worker restarts from the newest complete checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from forgellm.errors import ErrorCode, ForgeError
from forgellm.project.layout import ProjectLayout, RunLayout
from forgellm.project.lock import ProjectLock
from forgellm.project.run_record import RunSummary, latest_checkpoint, list_checkpoints
from forgellm.training.healing import Failure, classify, plan_recovery
from forgellm.training.launch import (
    LaunchOptions,
    ParallelPlan,
    main_endpoint,
    plan_parallel,
    wait_for_main,
)
from forgellm.training.protocol import (
    ExitCode,
    parse_event,
)
from forgellm.training.runs import Run, create_run, open_run
from forgellm.training.worker_process import Interrupts, Watchdog, memory_limit, start_worker, watchdog_seconds

if TYPE_CHECKING:
    from forgellm.config.schema import ForgeConfig
    from forgellm.project.prepared import PreparedData
    from forgellm.project.run_record import RunRecord
    from forgellm.runtime.runner import Runner

EventHandler = Callable[[dict[str, Any]], None]
_LOG_TAIL_CHARS = 20_000

# Besides the worker's events (protocol.EVENT_KINDS) and `recovery` records, on_event receives two
# notices that are not written to metrics.jsonl: {"event": "run", run_id, run_dir, resumed} and
# {"event": "attempt", attempt, resume_from}.


@dataclass
class AttemptResult:
    attempt: int
    exit_code: int
    error: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    last_step: int | None = None
    log_path: Path | None = None
    silent_seconds: float | None = None  # set when the watchdog killed the worker as hung

    def log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as handle:  # type: ignore[arg-type]
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - _LOG_TAIL_CHARS))
                return handle.read().decode("utf-8", errors="replace")
        except (OSError, TypeError):
            return ""


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    status: str  # completed | interrupted | failed
    reason: str | None
    summary: RunSummary
    recoveries: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "run_dir": str(self.run_dir), "status": self.status, **self.summary.to_dict()}

    @property
    def record(self) -> RunRecord:
        """The run's record (run.json, summary, checkpoints): what eval and export take."""
        from forgellm.project.run_record import RunRecord

        return RunRecord.load(self.run_dir)


class MetricsLog:
    """metrics.jsonl: one JSON object per line, flushed at once so a crash loses nothing written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] = open(path, "a", encoding="utf-8")

    def append(self, record: dict[str, Any], attempt: int) -> dict[str, Any]:
        stamped = {**record, "attempt": attempt, "time": round(time.time(), 3)}
        self._handle.write(json.dumps(stamped, ensure_ascii=False, default=str) + "\n")
        self._handle.flush()
        return stamped

    def close(self) -> None:
        self._handle.close()


def run_attempt(
    run: Run,
    attempt: int,
    resume_from: Path | None,
    metrics: MetricsLog,
    on_event: EventHandler,
    interrupts: Interrupts,
    runner: Runner | None = None,
    plan: ParallelPlan | None = None,
    options: LaunchOptions | None = None,
) -> AttemptResult:
    """One worker process (or container: ``runner``; or a group of processes: ``plan``) from start to
    exit; every event recorded and shown as it arrives."""
    log_path = run.layout.worker_log(attempt)
    result = AttemptResult(attempt, exit_code=0, log_path=log_path)
    plan = plan or ParallelPlan()
    with open(log_path, "ab") as log:
        project_dir = Path(run.spec.project_dir)
        process = (
            runner.start_worker(run.run_dir, resume_from, log, project_dir, run_id=run.run_id, attempt=attempt)
            if _in_container(runner)
            else start_worker(run.run_dir, resume_from, log, project_dir, plan, options)
        )
        interrupts.process = process  # type: ignore[assignment]
        try:
            assert process.stdout is not None
            with Watchdog(process, run.layout.heartbeat) as watchdog:
                for line in process.stdout:
                    event = parse_event(line)
                    if event is None:  # a library printed to stdout: keep it with the logs
                        log.write(line.encode("utf-8", errors="replace"))
                        log.flush()
                        continue
                    watchdog.event(event)
                    _remember(result, event)
                    on_event(metrics.append(event, attempt))
                result.exit_code = process.wait()
            if plan.world_size > 1:
                result.exit_code = group_exit_code(result.exit_code, result.error, result.end)
            if result.error is None and runner is not None:  # e.g. a container the OOM killer ended: no event
                result.error = runner.exit_error(process)
            result.silent_seconds = watchdog.silent_seconds
            if result.silent_seconds is not None:
                log.write(f"supervisor: no heartbeat for {result.silent_seconds:g} s; the worker was killed\n".encode())
        finally:
            if process.poll() is None:  # the supervisor itself failed: never leave a worker behind
                process.kill()
                process.wait()
            interrupts.process = None
    return result


# What a rank's error event means when the launcher's own exit code (1 for any failed rank) cannot say.
_GROUP_EXIT = {"oom": ExitCode.OOM, "nan": ExitCode.NAN, "config": ExitCode.CONFIG, "data": ExitCode.CONFIG}


def group_exit_code(code: int, error: dict[str, Any] | None, end: dict[str, Any] | None) -> int:
    """The exit code a single worker would have given, for a group that accelerate's launcher ran."""
    if code == ExitCode.OK:
        return code
    if error is not None:
        return _GROUP_EXIT.get(str(error.get("kind")), ExitCode.FAILED)
    if end is not None and end.get("reason") == "interrupted":
        return ExitCode.INTERRUPTED
    return code


def _remember(result: AttemptResult, event: dict[str, Any]) -> None:
    kind = event["event"]
    if kind == "error":
        if result.error is None or result.error.get("kind") == "crash":  # the first cause, not its echoes
            result.error = event
    elif kind == "end":
        result.end = event
    if isinstance(event.get("step"), int):
        result.last_step = max(result.last_step or 0, event["step"])


def _next_attempt(run_dir: Path) -> int:
    """Attempt numbers continue over resumed sessions, so each log file keeps its own number."""
    return 1 + len(list(RunLayout(run_dir).logs.glob("worker-*.log")))


@dataclass
class _Outcome:
    status: str
    reason: str | None = None
    error: ForgeError | None = None
    recoveries: list[dict[str, Any]] = field(default_factory=list)


def _checkpoint_step(run: Run) -> int | None:
    found = list_checkpoints(run.run_dir)
    return found[-1].step if found else None


def _attempts(
    run: Run,
    resumed: bool,
    metrics: MetricsLog,
    on_event: EventHandler,
    interrupts: Interrupts,
    runner: Runner | None,
    options: LaunchOptions,
) -> _Outcome:
    """Run attempts until one finishes, the user interrupts, or healing gives up."""
    outcome = _Outcome("interrupted", "interrupted")
    resume_from = latest_checkpoint(run.run_dir) if resumed else None
    previous: Failure | None = None
    attempt = _next_attempt(run.run_dir)
    while not interrupts.count:
        plan = _attempt_plan(run, runner, options)  # healing may have changed the strategy
        on_event({
            "event": "attempt", "attempt": attempt, "resume_from": str(resume_from) if resume_from else None,
            "parallel": plan.to_dict(),
        })  # fmt: skip
        result = run_attempt(run, attempt, resume_from, metrics, on_event, interrupts, runner, plan, options)
        if interrupts.count or result.exit_code == ExitCode.INTERRUPTED:
            if result.end is not None and result.exit_code == ExitCode.OK:  # it finished before it heard us
                outcome.status, outcome.reason = "completed", result.end.get("reason")
            return outcome
        # A machine of rank > 0 hears no events (rank 0's machine has them): its processes' exit 0 is the end.
        ended = result.end is not None or (options.node_rank > 0 and result.exit_code == ExitCode.OK)
        failure = classify(
            result.exit_code,
            result.error,
            ended,
            _checkpoint_step(run),
            silent_seconds=result.silent_seconds,
        )
        if failure is None:
            outcome.status, outcome.reason = "completed", result.end.get("reason") if result.end else None
            return outcome
        try:
            recovery = plan_recovery(
                failure,
                run.config,
                attempt=attempt,
                recoveries=outcome.recoveries,
                previous=previous,
                log_tail=result.log_tail(),
                run_id=run.run_id,
                parallel=plan,
            )
        except ForgeError as exc:
            exc.details.append(f"the worker's log: {result.log_path}")
            outcome.status, outcome.reason, outcome.error = "failed", failure.kind, exc
            return outcome
        resume_from = latest_checkpoint(run.run_dir)
        recovery.resume_from = str(resume_from) if resume_from else None
        if recovery.changes:
            run.save_config(recovery.config)
        record = recovery.record()
        outcome.recoveries.append(record)
        on_event(metrics.append(record, attempt))
        previous, attempt = failure, attempt + 1
    return outcome


def _attempt_plan(run: Run, runner: Runner | None, options: LaunchOptions) -> ParallelPlan:
    """parallel.json for the next attempt; a machine of rank > 0 first waits for the main one."""
    plan = plan_parallel(run.config, model_dir=Path(run.spec.model_dir))
    if plan.world_size > 1 and _in_container(runner):
        raise ForgeError(
            f"Training on {plan.world_size} processes runs on this machine's Python, not in a container yet.",
            fix="Add `--runtime local` (or set training.distributed: none to train in the container on one GPU).",
            code=ErrorCode.CONFIG_INVALID,
        )
    plan.save(run.run_dir)
    _check_launch(plan, options)  # a restarted group meets again: the main machine may still be restarting
    return plan


def _in_container(runner: Runner | None) -> bool:
    return runner is not None and runner.name != "local"


def _check_launch(plan: ParallelPlan, options: LaunchOptions) -> None:
    if plan.nodes > 1:
        endpoint = main_endpoint(plan, options)
        if options.node_rank > 0:
            wait_for_main(*endpoint)


def apply_parallel_overrides(config: ForgeConfig, overrides: dict[str, Any] | None) -> ForgeConfig:
    """forge.yaml's training.distributed / gpus / nodes with the command line's values over them."""
    values = {key: value for key, value in (overrides or {}).items() if value is not None}
    if not values:
        return config
    training = config.training.model_validate({**config.training.model_dump(), **values})
    return config.model_copy(update={"training": training})


def _tracker(run: Run, project_dir: Path) -> Any:
    from forgellm.training.tracking import flat_params, open_tracker

    config = run.config
    return open_tracker(config.training.report_to, run.run_dir, run.run_id, config.project.name, flat_params(config))


def _tracked(on_event: EventHandler, tracker: Any) -> EventHandler:
    """on_event that also sends each event's numbers to the experiment tracker, if there is one."""
    if tracker is None:
        return on_event
    from forgellm.training.tracking import metrics_of

    def handle(event: dict[str, Any]) -> None:
        if (numbers := metrics_of(event)) and isinstance(event.get("step"), int):
            tracker.log(numbers, event["step"])
        on_event(event)

    return handle


def record_runtime(run: RunLayout, choice: dict[str, Any]) -> None:
    """runtime.json: the runtime of each `forge train` session of the run (a resume may run elsewhere),
    newest last, so `forge status` and later readers know where the run trained."""
    from forgellm.project.record_io import read_object, write_object

    sessions = list((read_object(run.runtime) or {}).get("sessions") or [])
    sessions.append({**choice, "time": round(time.time(), 3)})
    write_object(run.runtime, {**sessions[-1], "sessions": sessions})


def run_training(
    layout: ProjectLayout,
    config: ForgeConfig,
    *,
    prepared: PreparedData | None = None,
    resume: str | bool | None = None,
    max_steps: int | None = None,
    on_event: EventHandler | None = None,
    runner: Runner | None = None,
    runtime: dict[str, Any] | None = None,
    parallel: dict[str, Any] | None = None,
    launch: LaunchOptions | None = None,
) -> RunResult:
    """Train `config` (the project's forge.yaml, loaded by the caller) in a new run on `prepared` (None: the
    prepared data matching it), or resume one (`resume`: a run id, or True for the newest unfinished run;
    it trains with its own snapshot). Returns when the run completed or was interrupted; ForgeError when
    it failed. ``runner``: where each worker attempt runs (default: a local subprocess); ``runtime``: what
    the run records about that choice (runtime.json: name, reason, image). ``parallel``: the command
    line's training.distributed / gpus / nodes (over forge.yaml's, or the resumed run's snapshot);
    ``launch``: this machine's place in a multi-node run."""
    from forgellm.training.summary import write_summary

    project_dir = layout.root.expanduser().resolve()
    layout = ProjectLayout(project_dir)
    on_event = on_event or (lambda _event: None)
    memory_limit(), watchdog_seconds()  # a drill's wrong setting is refused before a run exists
    launch = launch or LaunchOptions()
    config = apply_parallel_overrides(config, parallel)
    if not resume:  # `--gpus 4` on a machine with one, or an unreachable main machine: before a run exists
        _check_launch(plan_parallel(config), launch)
    with ProjectLock(project_dir, "train") as lock:
        lock.acquire()
        run = (
            open_run(project_dir, resume, max_steps=max_steps)
            if resume
            else create_run(layout, config, prepared=prepared, max_steps=max_steps)
        )
        if resume and parallel:
            run.save_config(apply_parallel_overrides(run.config, parallel))
        lock.record(run.run_id)
        record_runtime(run.layout, runtime or {"name": runner.name if runner else "local", "reason": "library default"})
        on_event({"event": "run", "run_id": run.run_id, "run_dir": str(run.run_dir), "resumed": bool(resume)})
        metrics = MetricsLog(run.layout.metrics)
        tracker = _tracker(run, project_dir)
        try:
            with Interrupts() as interrupts:
                outcome = _attempts(run, bool(resume), metrics, _tracked(on_event, tracker), interrupts, runner, launch)
        finally:
            metrics.close()
            if tracker is not None:
                tracker.close()
        message = outcome.error.message if outcome.error else None
        summary = write_summary(run.run_dir, outcome.status, outcome.reason, message)
    if outcome.error is not None:
        raise outcome.error
    return RunResult(run.run_id, run.run_dir, outcome.status, outcome.reason, summary, outcome.recoveries)
