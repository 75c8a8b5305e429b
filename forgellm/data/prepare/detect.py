"""The data format of a `forge prepare` input (forge.yaml says `format: auto`): detected from the data,
written into forge.yaml only after the input prepared successfully (or when the user asks, --show-recipe),
and never for an input without a single usable row, which stops before anything is written but its rejects.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from forgellm.config.io import load_config, save_config
from forgellm.config.schema import ForgeConfig
from forgellm.data.read.records import BadRow, reason_kind
from forgellm.errors import ErrorCode, ForgeError
from forgellm.project.layout import ProjectLayout


def _with_detection(config: ForgeConfig, input_path: Path, detection: Any) -> ForgeConfig:
    updated = config.model_copy(deep=True)
    updated.data.source = str(input_path)
    updated.data.format = detection.format
    updated.data.recipe = detection.recipe
    updated.data.rationale = "Detected by forge: " + "; ".join(detection.reasons)
    if detection.format == "text" and updated.training.stage != "cpt":
        updated.training.stage = "cpt"
        updated.training.rationale = "Raw documents were detected, so training continues pre-training (stage: cpt)."
    return updated


def detect_data_format(layout: ProjectLayout, input_path: Path, config: ForgeConfig) -> tuple[ForgeConfig, Any]:
    """data.format and data.recipe detected from the data (forge.yaml says `format: auto`); returns the
    updated config and the detection. Writes nothing to forge.yaml (`record_detection` does, once the data
    proved usable). An input without a single readable row stops here, its rows in a rejects file."""
    from forgellm.data.read.formats import detect_format
    from forgellm.data.read.readers import open_dataset, sample_records

    dataset = open_dataset(input_path)
    sample = sample_records(dataset, 1000)
    if not sample:
        raise _no_usable_rows(layout, input_path, dataset)
    from forgellm.data.prepare.fit import first_fitting, no_recipe_error, settle

    detection = detect_format(sample, kind=dataset.info.kind)
    limit = config.preprocessing.max_error_rate
    settled = settle(detection, sample, limit)
    if settled.fits is False:  # prepare would reject the whole file: say what to set instead
        raise no_recipe_error(input_path.name, sample, first_fitting(detection, sample, limit)[2])
    detection = settled
    return _with_detection(config, input_path, detection), detection


def record_detection(layout: ProjectLayout, input_path: Path, detection: Any) -> None:
    """Save a detected data.format and data.recipe in forge.yaml (atomically), where the user can edit them.
    The file is read back as written (a read-modify-write) so FORGE_* overrides are not baked into it."""
    on_disk = load_config(layout.config_file, environ={}).config
    save_config(_with_detection(on_disk, input_path, detection), layout.config_file)


def detect_recipe(layout: ProjectLayout, input_path: Path, config: ForgeConfig) -> tuple[ForgeConfig, Any]:
    """`forge prepare FILE --show-recipe`: detect and save in forge.yaml (the user asked for the recipe)."""
    config, detection = detect_data_format(layout, input_path, config)
    record_detection(layout, input_path, detection)
    return config, detection


def _no_usable_rows(layout: ProjectLayout, input_path: Path, dataset: Any) -> ForgeError:
    """Every row of the input was unreadable: write them all (line + reason) to a rejects file and say so."""
    from forgellm.data.prepare.output import json_line
    from forgellm.files import atomic_write_bytes

    reasons: Counter = Counter()
    lines = []
    for item in dataset:
        if isinstance(item, BadRow):
            reasons[reason_kind(item.reason)] += 1
            lines.append(
                json_line({"line": item.line, "source": item.source, "reason": item.reason, "excerpt": item.excerpt})
            )
    rejects = layout.unusable_rejects(input_path.name)
    atomic_write_bytes(rejects, b"".join(lines))
    top = "; ".join(f"{reason}: {count}" for reason, count in reasons.most_common(3)) or "no rows at all"
    return ForgeError(
        f"{input_path.name} has no usable row: all {len(lines):,} rows were rejected ({top}). Nothing was "
        "prepared and forge.yaml was not changed.",
        fix=f"See each rejected line and why in {rejects}; fix the file (or export it again) and run "
        "`forge prepare` again.",
        code=ErrorCode.DATA_ROWS_REJECTED,
        data={
            "rejected": len(lines),
            "reasons": dict(reasons.most_common(10)),
            "missing_column": None,
            "untrained": 0,
            "error_codes": {},
            "rejects": str(rejects),
        },
    )
