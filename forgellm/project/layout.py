"""Every path of a project folder, named once.

```
<root>/forge.yaml
<root>/data/prepared/<fingerprint>/   manifest.json, stats.json, rejects.jsonl, <split>.parquet|jsonl
<root>/data/rejects/<input>.rejects.jsonl  the rows of an input with no usable row at all (nothing prepared)
<root>/runs/<run-id>/                 run.json, config.yaml, metrics.jsonl, checkpoints/step-<N>/, best/,
                                      summary.json, loss.png, logs/
<root>/exports/<name>/                merged/, <name>-<quant>.gguf, Modelfile, README.md, metadata.json
<root>/reports/                       study.html/json, eval.html/json
<root>/.forge/                        project.lock, ignite.json, input-hashes.json, advisor-cache/, scripts/
```

Code asks a layout for a path (``layout.run(run_id).summary``) instead of joining names itself, so a
file's name lives here and nowhere else. Nothing here touches the disk except `ensure`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from forgellm.config.io import CONFIG_FILENAME

# ------------------------------------------------------------------------------------------------ names

DATA_DIR = "data"
PREPARED_DIR = "prepared"
UNUSABLE_DIR = "rejects"
SCRIPTED_DIR = "scripted"  # conversations an advisor's script made from the input (forge prepare --script)
GENERAL_DIR = "general"  # general data mixed in against forgetting (forge plan --apply-replay)
RUNS_DIR = "runs"
EXPORTS_DIR = "exports"
REPORTS_DIR = "reports"
STATE_DIR = ".forge"

# data/prepared/<fingerprint>/
MANIFEST = "manifest.json"
STATS = "stats.json"
REJECTS = "rejects.jsonl"
PARTIAL_PREFIX = ".partial-"  # a preparation in progress; renamed to its fingerprint when published

# runs/<run-id>/
RUN_SPEC = "run.json"
RUN_CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
CHECKPOINT_PREFIX = "step-"
BEST = "best"
SUMMARY = "summary.json"
LOSS_PLOT = "loss.png"
LOGS = "logs"
TRAINER_STATE = "trainer_state.pt"  # inside a checkpoint, written last: its presence marks a complete one
FAULTS_FIRED = ".faults-fired"  # injected faults already fired in this run (see training.protocol)
RUNTIME = "runtime.json"  # where the run's worker attempts ran (local or docker, and why), per session
PARALLEL = "parallel.json"  # how the attempt spreads over processes (training/launch.py)
HEARTBEAT = ".heartbeat"  # the worker touches it from its training loop; the supervisor's watchdog reads its time
TENSORBOARD = "tensorboard"  # training.report_to: tensorboard
MLRUNS = "mlruns"  # training.report_to: mlflow, one store beside the runs

# exports/<name>/
METADATA = "metadata.json"
MODELFILE = "Modelfile"
MERGED = "merged"
MODEL_CARD = "README.md"

# reports/
STUDY_HTML = "study.html"
STUDY_JSON = "study.json"
EVAL_HTML = "eval.html"
EVAL_JSON = "eval.json"

# .forge/
PROJECT_LOCK = "project.lock"  # one writing command at a time (forgellm.project.lock)
PIPELINE_STATE = "pipeline.json"
STAGE_MODELS_DIR = "models"
IGNITE_STATE = "ignite.json"
UI_TRAIN_LOG_PREFIX = "ui-train-"  # .forge/ui-train-<time>.log: the output of a training started from `forge ui`
INPUT_HASHES = "input-hashes.json"
ADVISOR_CACHE = "advisor-cache"
SCRIPTS_DIR = "scripts"


# ------------------------------------------------------------------------------------------------ folders


@dataclass(frozen=True)
class PreparedLayout:
    """One prepared folder, data/prepared/<fingerprint>/ (or a .partial- one while it is built)."""

    folder: Path

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def manifest(self) -> Path:
        return self.folder / MANIFEST

    @property
    def stats(self) -> Path:
        return self.folder / STATS

    @property
    def rejects(self) -> Path:
        return self.folder / REJECTS

    def split_parquet(self, split: str) -> Path:
        """The tokenized split (input_ids, labels) that training and evaluation read."""
        return self.folder / f"{split}.parquet"

    def split_jsonl(self, split: str) -> Path:
        """The split's conversations as text, one JSON object a line."""
        return self.folder / f"{split}.jsonl"


@dataclass(frozen=True)
class RunLayout:
    """One run folder, runs/<run-id>/ (see forgellm.training.protocol for who writes what)."""

    folder: Path

    @property
    def run_id(self) -> str:
        return self.folder.name

    @property
    def spec(self) -> Path:
        return self.folder / RUN_SPEC

    @property
    def config(self) -> Path:
        return self.folder / RUN_CONFIG

    @property
    def metrics(self) -> Path:
        return self.folder / METRICS

    @property
    def checkpoints(self) -> Path:
        return self.folder / CHECKPOINTS

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"{CHECKPOINT_PREFIX}{step}"

    @property
    def best(self) -> Path:
        return self.folder / BEST

    @property
    def summary(self) -> Path:
        return self.folder / SUMMARY

    @property
    def loss_plot(self) -> Path:
        return self.folder / LOSS_PLOT

    @property
    def logs(self) -> Path:
        return self.folder / LOGS

    def worker_log(self, attempt: int) -> Path:
        return self.logs / f"worker-{attempt}.log"

    @property
    def faults_fired(self) -> Path:
        return self.folder / FAULTS_FIRED

    @property
    def heartbeat(self) -> Path:
        return self.folder / HEARTBEAT

    @property
    def runtime(self) -> Path:
        return self.folder / RUNTIME

    @property
    def parallel(self) -> Path:
        return self.folder / PARALLEL

    @property
    def tensorboard(self) -> Path:
        return self.folder / TENSORBOARD

    @property
    def mlflow_store(self) -> Path:
        return self.folder.parent / MLRUNS


@dataclass(frozen=True)
class ExportLayout:
    """One export folder, exports/<name>/ (or the hidden partial folder it is built in)."""

    folder: Path

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def metadata(self) -> Path:
        return self.folder / METADATA

    @property
    def modelfile(self) -> Path:
        return self.folder / MODELFILE

    @property
    def merged(self) -> Path:
        return self.folder / MERGED

    @property
    def card(self) -> Path:
        return self.folder / MODEL_CARD

    @property
    def loss_plot(self) -> Path:
        return self.folder / LOSS_PLOT

    def gguf(self, name: str, quant: str) -> Path:
        return self.folder / f"{name}-{quant}.gguf"


# ------------------------------------------------------------------------------------------------ project


@dataclass(frozen=True)
class ProjectLayout:
    """The paths of the project whose folder is `root`."""

    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / CONFIG_FILENAME

    @property
    def data_dir(self) -> Path:
        return self.root / DATA_DIR

    @property
    def prepared_dir(self) -> Path:
        return self.data_dir / PREPARED_DIR

    def prepared(self, fingerprint: str) -> PreparedLayout:
        return PreparedLayout(self.prepared_dir / fingerprint)

    def unusable_rejects(self, input_name: str) -> Path:
        """data/rejects/<name>.rejects.jsonl: every row of input <name> with its line and reason, written when
        no row could be read and prepare stopped before anything else."""
        return self.data_dir / UNUSABLE_DIR / f"{input_name}.rejects.jsonl"

    def scripted_data(self, stem: str) -> Path:
        """data/scripted/<stem>.jsonl: what a `--script` made of the input file <stem>.*, prepared next."""
        return self.data_dir / SCRIPTED_DIR / f"{stem}.jsonl"

    def general_data(self, name: str) -> Path:
        """data/general/<name>: a general data set copied into the project for a replay mix."""
        return self.data_dir / GENERAL_DIR / name

    def partial_prepared(self, work_id: str) -> PreparedLayout:
        return PreparedLayout(self.prepared_dir / f"{PARTIAL_PREFIX}{work_id}")

    def partial_prepared_dirs(self) -> list[Path]:
        """Preparations that were interrupted (or are running), by name."""
        return sorted(p for p in self.prepared_dir.glob(f"{PARTIAL_PREFIX}*") if p.is_dir())

    @property
    def runs_dir(self) -> Path:
        return self.root / RUNS_DIR

    def run(self, run_id: str) -> RunLayout:
        return RunLayout(self.runs_dir / run_id)

    @property
    def exports_dir(self) -> Path:
        return self.root / EXPORTS_DIR

    def export(self, name: str) -> ExportLayout:
        return ExportLayout(self.exports_dir / name)

    @property
    def reports_dir(self) -> Path:
        return self.root / REPORTS_DIR

    @property
    def study_html(self) -> Path:
        return self.reports_dir / STUDY_HTML

    @property
    def study_json(self) -> Path:
        return self.reports_dir / STUDY_JSON

    @property
    def eval_html(self) -> Path:
        return self.reports_dir / EVAL_HTML

    @property
    def eval_json(self) -> Path:
        return self.reports_dir / EVAL_JSON

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def project_lock(self) -> Path:
        return self.state_dir / PROJECT_LOCK

    def ui_train_log(self, stamp: str) -> Path:
        return self.state_dir / f"{UI_TRAIN_LOG_PREFIX}{stamp}.log"

    @property
    def ignite_state(self) -> Path:
        return self.state_dir / IGNITE_STATE

    @property
    def pipeline_state(self) -> Path:
        """`forge pipeline`'s progress: which steps finished, for the same inputs (like ignite_state)."""
        return self.state_dir / PIPELINE_STATE

    @property
    def stage_models_dir(self) -> Path:
        return self.root / STAGE_MODELS_DIR

    def stage_model(self, stage: str) -> Path:
        """The model folder a stage's result was merged into: the base of the stage after it. Named
        `after-<stage>`, so the next stage's run ids (named after their model) read `lora-after-cpt`."""
        return self.stage_models_dir / f"after-{stage}"

    @property
    def input_hashes(self) -> Path:
        return self.state_dir / INPUT_HASHES

    @property
    def advisor_cache(self) -> Path:
        return self.state_dir / ADVISOR_CACHE

    @property
    def scripts_dir(self) -> Path:
        return self.state_dir / SCRIPTS_DIR

    @property
    def script_runs_dir(self) -> Path:
        return self.scripts_dir / RUNS_DIR

    def folders(self) -> dict[str, Path]:
        """The folders `forge init` creates, by their name relative to the root."""
        paths = (self.data_dir, self.prepared_dir, self.runs_dir, self.exports_dir, self.reports_dir, self.state_dir)
        return {path.relative_to(self.root).as_posix(): path for path in paths}

    def gitignored(self) -> tuple[str, ...]:
        """Outputs that are large and reproducible from forge.yaml, as .gitignore lines."""
        return tuple(f"{path.relative_to(self.root).as_posix()}/" for path in self._ignored())

    def _ignored(self) -> tuple[Path, ...]:
        return (self.prepared_dir, self.runs_dir, self.exports_dir, self.state_dir)
