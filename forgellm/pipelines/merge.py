"""A finished stage's result as the next stage's model: the held-out loss on the stage's val split before and
after it (for CPT: documents training never saw, so the perplexity says what CPT learned about the domain),
then the best adapter merged into `models/<stage>/` with its `StageModel` record."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from forgellm.errors import ErrorCode, ForgeError
from forgellm.project.layout import ProjectLayout
from forgellm.project.stage_model import StageModel


def held_out_losses(source: Any, setup: Any, examples: int) -> dict[str, Any]:
    """Loss and perplexity of the base and of the stage's best weights on the run's val split."""
    from forgellm.evaluation.loss import choose_examples, score_losses
    from forgellm.inference.engines import TransformersEngine
    from forgellm.project.run_record import RunSpec
    from forgellm.training.data import load_split

    split = load_split(Path(RunSpec.load(source.run_dir).prepared_dir), "val")
    if len(split) == 0:
        return {"split": "val", "examples": 0}
    indices = choose_examples(split.lengths, split.targets, split.offsets, examples, source.config.training.seed)
    adapter = source.weights_dir if source.is_adapter else None
    tuned = TransformersEngine.load(source.base_model_dir if adapter else source.weights_dir, setup.tokenizer,
                                    setup.chat_format, source.run_id, adapter_dir=adapter)  # fmt: skip
    base = tuned.without_adapter("base") if adapter else TransformersEngine.load(
        source.base_model_dir, setup.tokenizer, setup.chat_format, "base")  # fmt: skip
    quiet = lambda _done, _total: None  # noqa: E731
    before = score_losses(base, split, indices, advance=quiet).mean
    after = score_losses(tuned, split, indices, advance=quiet).mean
    return {
        "split": "val",
        "examples": len(indices),
        "tokens": int(split.lengths[indices].sum()),
        "loss_before": before,
        "loss_after": after,
        "perplexity_before": math.exp(before) if before is not None else None,
        "perplexity_after": math.exp(after) if after is not None else None,
    }


def merge_stage_result(
    layout: ProjectLayout, stage: str, run_id: str, examples: int, progress: Callable[[str], None]
) -> StageModel:
    """Measure, merge and record; the folder appears complete or not at all (written beside, then renamed)."""
    from forgellm.export.merge import write_merged
    from forgellm.export.source import find_export_source, training_chat_setup

    source = find_export_source(layout.root, run_id)
    setup = training_chat_setup(source)
    progress(f"Held-out loss of the base and of run {run_id} on the {stage} val split")
    held_out = held_out_losses(source, setup, examples)
    if held_out.get("examples", 0) == 0:
        raise ForgeError(
            f"The {stage} stage's data has no val split, so no checkpoint could be chosen by held-out perplexity.",
            fix="Give the val split a share (preprocessing.split.val, e.g. 0.05) and run the same command again.",
            code=ErrorCode.STAGE_MISSING,
            data={"stage": stage},
        )
    final = layout.stage_model(stage)
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    progress(f"Merging run {run_id}'s {source.checkpoint} weights into {final.relative_to(layout.root)}/")
    write_merged(source, setup.chat_format, setup.tokenizer, partial)
    record = StageModel(stage, run_id, source.checkpoint, str(source.base_model_dir), str(final), held_out,
                        datetime.now(UTC).isoformat(timespec="seconds"))  # fmt: skip
    record.folder = str(partial)
    record.save()
    record.folder = str(final)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    record.save()  # the folder's own path, once it has it
    return record
