"""The typed records stages hand each other, one module each; every record has one writer, one reader
(its `load`), a version, and keeps the JSON keys of the files Forge wrote before it.

  PreparedData  data/prepared/<fp>/ manifest.json + stats.json   written by `forge prepare`
  RunSpec       runs/<id>/run.json                               written by `forge train` (create_run)
  RunSummary    runs/<id>/summary.json                           written by the training supervisor
  RunRecord     a run folder read whole: spec, summary, checkpoints, best/, config snapshot
  ExportMetadata exports/<name>/metadata.json                    written by `forge export`
  EvalRecord    reports/eval.json                                written by `forge eval`
"""

from forgellm.project.eval_record import EvalRecord
from forgellm.project.export_record import ExportFiles, ExportMetadata, OllamaRecord, newest_export
from forgellm.project.prepared import PreparedData, PreparedStats, SplitCounts, published_data
from forgellm.project.record_io import RECORD_VERSION
from forgellm.project.run_record import (
    Checkpoint,
    RunRecord,
    RunSpec,
    RunSummary,
    latest_checkpoint,
    list_checkpoints,
    run_status,
)

__all__ = [
    "RECORD_VERSION",
    "Checkpoint",
    "EvalRecord",
    "ExportFiles",
    "ExportMetadata",
    "OllamaRecord",
    "PreparedData",
    "PreparedStats",
    "RunRecord",
    "RunSpec",
    "RunSummary",
    "SplitCounts",
    "latest_checkpoint",
    "list_checkpoints",
    "newest_export",
    "published_data",
    "run_status",
]
