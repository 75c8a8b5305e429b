"""Eval's forgetting pass: the general slice scored by each model eval holds, and by the original base when
the run trained on a stage's result (a CPT model folder, `project/stage_model.py`), so the figure reads
base -> after CPT -> after IFT. The rules (slice, threshold, replay share) are in forgetting.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class GeneralCheck:
    chosen: Any  # forgetting.GeneralSlice
    split: Any  # its TokenizedSplit
    labels: dict[str, str]  # eval's side (base | fine-tuned) -> the label in the figure
    losses: dict[str, float | None] = field(default_factory=dict)

    @classmethod
    def start(cls, target: Any, base: Any, general: Path | None, seed: int, report: Any) -> GeneralCheck:
        """The slice, tokenized with the run's chat template, and the original base scored first when the
        run's base is a stage result (loaded beside the run's models, then let go)."""
        from forgellm.evaluation.forgetting import GENERAL_EXAMPLES, general_loss, general_slice, tokenize_slice
        from forgellm.project.stage_model import StageModel

        chosen = general_slice(target.prepared, general, GENERAL_EXAMPLES, seed)
        split = tokenize_slice(chosen, base.chat_format, base.tokenizer, target.source.config.model.max_length)
        stage = StageModel.load(target.source.base_model_dir)
        check = cls(chosen, split, {"base": "base", "fine-tuned": "fine-tuned"})
        if stage is not None and Path(stage.base_model, "config.json").is_file():
            from forgellm.inference.engines import TransformersEngine

            report.stage(f"General loss of the original base model on {len(split)} general conversations")
            original = TransformersEngine.load(Path(stage.base_model), base.tokenizer, base.chat_format, "base")
            check.losses["base"] = general_loss(original, split)
            del original
            check.labels = {"base": f"after {stage.stage.upper()}", "fine-tuned": "after IFT"}
        return check

    def score(self, who: str, engine: Any) -> None:
        from forgellm.evaluation.forgetting import general_loss

        self.losses[self.labels[who]] = general_loss(engine, self.split)

    def result(self, config: Any) -> Any:
        from forgellm.evaluation.forgetting import judge_forgetting

        return judge_forgetting(self.losses, self.chosen, self.split, current_general_share(config))


def current_general_share(config: Any) -> float | None:
    """The share of general/replay sources in the run's data mixture (None: no mixture)."""
    sources = config.data.sources
    shares = [s.ratio for s in sources if s.role in ("general", "replay") and s.ratio is not None]
    return round(sum(shares), 4) if sources else None
