"""`forge plan --apply-replay`: mix in the general data eval recommended after it measured forgetting.

Eval writes the recommendation (`summary.forgetting.recommendation` in reports/eval.json: the share of
general data, and why). Applying it rewrites the data of the stage that taught the model its task (the
IFT stage of a two-stage project, else the project's own data) as a mixture, `data.sources`:

- a general or replay source already there gets the recommended share, the others keep their proportions
  in the rest;
- else the single `data.source` becomes the domain source and a general source is added: the general
  set shipped with Forge, copied into the project (data/general/), so the project keeps working where
  Forge is upgraded or moved.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgellm.config.schema import ForgeConfig
from forgellm.errors import ErrorCode, ForgeError
from forgellm.project.eval_record import EvalRecord
from forgellm.project.layout import ProjectLayout

GENERAL_ROLES = ("general", "replay")


@dataclass
class ReplayChange:
    config: ForgeConfig
    share: float
    where: str  # "the ift stage" | "data"
    sources: list[dict[str, Any]]
    copied: Path | None  # the shipped general set, when it was copied into the project
    why: str


def recommended_share(layout: ProjectLayout) -> tuple[float, str]:
    """(share, why) from reports/eval.json; ForgeError when eval did not recommend a replay share."""
    record = EvalRecord.load(layout)
    if record is None:
        raise ForgeError(
            "There is no evaluation to take a replay share from.",
            fix="Run `forge eval` first: it measures the general loss and recommends a share when it rose.",
            code=ErrorCode.EVAL_MISSING,
        )
    forgetting = record.summary.get("forgetting") or {}
    recommendation = forgetting.get("recommendation")
    if not isinstance(recommendation, dict) or not isinstance(recommendation.get("ratio"), (int, float)):
        said = forgetting.get("message") or "the evaluation measured no forgetting"
        raise ForgeError(
            f"Eval recommends no replay share: {said}",
            fix="Nothing to apply. After a new run, `forge eval` measures again.",
            code=ErrorCode.USAGE_INVALID,
        )
    return float(recommendation["ratio"]), str(recommendation.get("why") or "")


def _with_share(sources: list[dict[str, Any]], share: float) -> list[dict[str, Any]]:
    """Sources with the general/replay ones at `share` in all (split as they were) and the rest scaled."""
    general = [s for s in sources if s.get("role") in GENERAL_ROLES]
    others = [s for s in sources if s.get("role") not in GENERAL_ROLES]
    if any(s.get("ratio") is None for s in sources):
        raise ForgeError(
            "The mixture gives some sources a count, not a ratio: a share cannot be applied to it.",
            fix=f"Give every source a ratio in forge.yaml, with {share:.0%} for the general ones, or set the counts "
            "yourself.",
            code=ErrorCode.CONFIG_INVALID,
        )
    general_total = sum(s["ratio"] for s in general) or 1.0
    other_total = sum(s["ratio"] for s in others) or 1.0
    changed = [
        {**s, "ratio": round(share * s["ratio"] / general_total, 4)}
        if s.get("role") in GENERAL_ROLES
        else {**s, "ratio": round((1 - share) * s["ratio"] / other_total, 4)}
        for s in sources
    ]  # in the order of forge.yaml
    drift = round(1.0 - sum(s["ratio"] for s in changed), 4)  # rounding: the largest takes the remainder
    largest = max(changed, key=lambda s: s["ratio"])
    largest["ratio"] = round(largest["ratio"] + drift, 4)
    return changed


def _shipped_general(layout: ProjectLayout) -> Path:
    from forgellm.evaluation.forgetting import SHIPPED_GENERAL

    target = layout.general_data(SHIPPED_GENERAL.name)
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")
        shutil.copyfile(SHIPPED_GENERAL, partial)
        shutil.copyfile(SHIPPED_GENERAL.with_name("LICENSE.md"), target.with_name("LICENSE.md"))
        partial.replace(target)
    return target


def apply_replay(layout: ProjectLayout, config: ForgeConfig) -> ReplayChange:
    """forge.yaml's config with eval's recommended replay share applied (not saved: the caller saves)."""
    share, why = recommended_share(layout)
    data = config.model_dump(mode="json")
    ift = next((stage for stage in data["stages"] if stage.get("after")), None)
    section = ift["data"] if ift is not None else data["data"]
    inherited = data["data"]
    sources = section.get("sources")
    if not sources and ift is not None and "source" not in section:  # the stage mixes the project's sources
        sources = inherited.get("sources")
    copied = None
    if sources:
        mixed = _with_share(sources, share)
    else:
        source = section.get("source") or inherited.get("source")
        if not source:
            raise ForgeError(
                "forge.yaml names no training data to mix general data into.",
                fix='Run `forge plan "GOAL" --data FILE` (or set data.source) first.',
                code=ErrorCode.CONFIG_INVALID,
            )
        domain: dict[str, Any] = {"name": "domain", "path": source, "role": "domain"}
        fmt = section.get("format", inherited.get("format", "auto"))
        domain["format"] = fmt
        recipe = section.get("recipe") if "recipe" in section else inherited.get("recipe")
        if fmt != "auto" and recipe:
            domain["recipe"] = recipe
        copied = _shipped_general(layout)
        general = {"name": "general", "path": str(copied.relative_to(layout.root)), "role": "general", "format": "auto"}
        mixed = _with_share([{**domain, "ratio": 1.0}, {**general, "ratio": 1.0}], share)
    if ift is not None:  # a stage naming `source` would drop its `sources` (config/stages.py)
        for key in ("source", "format", "recipe"):
            ift["data"].pop(key, None)
    section["sources"] = mixed
    note = f"Replay: {share:.0%} general data mixed in after eval measured forgetting ({why})."
    if ift is not None:
        ift["rationale"] = ((ift.get("rationale") or "") + " " + note).strip()
        where = f"the {ift['name']} stage"
    else:
        section["rationale"] = ((section.get("rationale") or "") + " " + note).strip()
        where = "data"
    updated = ForgeConfig.model_validate(data)
    return ReplayChange(updated, share, where, mixed, copied, note)
