"""Experiment tracking (`training.report_to`): the worker's events, logged through each library's own API.

The supervisor sees every event of every attempt, so tracking lives here rather than in the worker:
a run healed across three worker processes is still one continuous curve in TensorBoard, MLflow or
Weights & Biases. Nothing is tracked by default (`none`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from forgellm.errors import ErrorCode, ForgeError
from forgellm.project.layout import RunLayout

_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
# Event field -> metric name; only numbers are logged.
_STEP_METRICS = {"loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm",
                 "tokens_per_s": "train/tokens_per_s", "memory_bytes": "train/memory_bytes"}  # fmt: skip
_EVAL_METRICS = {"val_loss": "eval/loss", "best_val_loss": "eval/best_loss"}


class Tracker(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def metrics_of(event: dict[str, Any]) -> dict[str, float]:
    """The numbers of a step or eval event under stable metric names (recoveries count as a metric)."""
    names = {"step": _STEP_METRICS, "eval": _EVAL_METRICS}.get(event.get("event"), {})
    found = {name: float(event[key]) for key, name in names.items() if isinstance(event.get(key), int | float)}
    if event.get("event") == "recovery":
        found["run/recoveries"] = float(event.get("attempt") or 1)
    return found


class _TensorBoard:
    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(RunLayout(run_dir).tensorboard))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _MLflow:
    def __init__(self, run_dir: Path, run_id: str, params: dict[str, Any]) -> None:
        import mlflow

        if not os.environ.get("MLFLOW_TRACKING_URI"):  # a local store beside the runs, not the cwd
            mlflow.set_tracking_uri(RunLayout(run_dir).mlflow_store.resolve().as_uri())
        self.mlflow = mlflow
        mlflow.start_run(run_name=run_id)
        mlflow.log_params(params)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics({k.replace("/", "_"): v for k, v in metrics.items()}, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


class _Wandb:
    def __init__(self, run_dir: Path, run_id: str, project: str, params: dict[str, Any]) -> None:
        import wandb

        # Without a key wandb would stop and ask for one: log offline instead (`wandb sync` uploads later).
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self.run = wandb.init(project=project, name=run_id, config=params, dir=str(run_dir), mode=mode)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


def open_tracker(report_to: str, run_dir: Path, run_id: str, project: str, params: dict[str, Any]) -> Tracker | None:
    """The tracker forge.yaml asks for, or None for `none`; a missing library is a clear error."""
    if report_to == "none":
        return None
    package = _PACKAGES[report_to]
    try:
        if report_to == "tensorboard":
            return _TensorBoard(run_dir)
        if report_to == "mlflow":
            return _MLflow(run_dir, run_id, params)
        return _Wandb(run_dir, run_id, project, params)
    except ImportError:
        raise ForgeError(
            f"training.report_to is {report_to}, but the `{package}` package is not installed.",
            fix=f"Install it (`pip install {package}`) or set training.report_to: none in forge.yaml.",
            code=ErrorCode.DEPENDENCY_MISSING, data={"package": package},
        ) from None


def flat_params(config: Any) -> dict[str, Any]:
    """The training settings as flat name -> scalar pairs, as tracking libraries expect parameters."""
    flat: dict[str, Any] = {"model": config.model.ref, "max_length": config.model.max_length}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                if key != "rationale":
                    walk(f"{prefix}.{key}", inner)
        elif value is not None:
            flat[prefix] = value if isinstance(value, int | float | str | bool) else str(value)

    walk("training", config.training.model_dump(mode="json"))
    return flat
