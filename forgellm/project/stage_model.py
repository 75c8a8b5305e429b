"""The record of a stage's result merged into a model folder (`StageModel`): `models/<stage>/stage.json`.

Written by `forge pipeline` when a stage (CPT) finished: its best weights, chosen by the held-out loss
on the stage's val split, merged into a plain Hugging Face folder that the next stage (IFT) trains on
(its `model.ref`). Read by the pipeline (the next stage's base), eval (the original base for the
forgetting figure: base -> after CPT -> after IFT) and status (the CPT perplexity).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from forgellm.project.record_io import RECORD_VERSION, as_dict, as_str, known_fields, read_object, write_object

STAGE_MODEL_FILE = "stage.json"


@dataclass
class StageModel:
    stage: str = ""  # the stage whose result this is (cpt)
    run_id: str = ""  # its run
    checkpoint: str = "best"  # best or step-N
    base_model: str = ""  # the model ref that run trained on: the original base
    folder: str = ""  # the merged model folder (this record sits inside it)
    # Held-out loss on the stage's val split (documents training never saw), before and after the stage:
    # {split, examples, tokens, loss_before, loss_after, perplexity_before, perplexity_after}.
    held_out: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None
    version: int = RECORD_VERSION

    def save(self) -> None:
        write_object(Path(self.folder) / STAGE_MODEL_FILE, asdict(self), allow_nan=False)

    @classmethod
    def load(cls, folder: str | Path) -> StageModel | None:
        """The record in a model folder, or None when the folder is no stage result (any other model)."""
        data = read_object(Path(folder) / STAGE_MODEL_FILE)
        if not data or not isinstance(data.get("stage"), str) or not isinstance(data.get("base_model"), str):
            return None
        record = known_fields(cls, data)
        record.held_out = as_dict(record.held_out)
        record.run_id = as_str(record.run_id) or ""
        return record
