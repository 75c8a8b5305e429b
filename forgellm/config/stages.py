"""A stage's effective config: forge.yaml with one `stages:` entry merged over it (the one home of that rule).

Mappings merge key by key (a stage that sets `training: {learning_rate: 1e-4}` keeps the project's other
training settings); anything else (a list such as `data.sources`, a number) replaces the project's value.
`data.source` and `data.sources` are alternatives: a stage that names one drops the other it inherits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the schema's validator calls check_stages: no import back at run time
    from forgellm.config.schema import ForgeConfig, StageSection

MERGED_SECTIONS = ("model", "data", "preprocessing", "training")


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def merged_mapping(config: ForgeConfig, stage: StageSection) -> dict[str, Any]:
    """forge.yaml's mapping (without `stages:`) with ``stage``'s sections merged over it."""
    data = config.model_dump(mode="json", exclude={"stages"})
    for section in MERGED_SECTIONS:
        changes = getattr(stage, section)
        if section == "data":
            # One data source per stage: a stage naming `source` does not inherit the project's `sources`
            # (a mixture), nor the other way round.
            for one, other in (("source", "sources"), ("sources", "source")):
                if one in changes:
                    data["data"].pop(other, None)  # its default: none
        data[section] = _merge(data[section], changes)
    rationale = stage.rationale or data["training"].get("rationale")
    data["training"]["rationale"] = rationale
    return data


def find_stage(config: ForgeConfig, name: str) -> StageSection:
    from forgellm.errors import ErrorCode, ForgeError

    for stage in config.stages:
        if stage.name == name:
            return stage
    names = ", ".join(s.name for s in config.stages) or "none"
    raise ForgeError(
        f"forge.yaml has no stage named {name!r} (its stages: {names}).",
        fix='Run `forge pipeline cpt-ift DOCS CONVERSATIONS "GOAL"`, which writes the stages, or add it under '
        "`stages:` in forge.yaml.",
        code=ErrorCode.STAGE_MISSING,
        data={"stage": name},
    )


def stage_config(config: ForgeConfig, name: str) -> ForgeConfig:
    """The effective ForgeConfig of stage ``name`` (no `stages:` of its own): what that stage's prepare,
    train, eval and export take, and what its run's snapshot records."""
    return type(config).model_validate(merged_mapping(config, find_stage(config, name)))


def check_stages(config: ForgeConfig) -> None:
    """Called by ForgeConfig's validator: unique names, `after` naming an earlier stage, each stage valid
    once merged (raised as ValueError, which pydantic reports with the key and the stage's name)."""
    from pydantic import ValidationError

    seen: list[str] = []
    for stage in config.stages:
        if stage.name in seen:
            raise ValueError(f"stages: the name {stage.name!r} is used twice")
        if stage.after is not None and stage.after not in seen:
            raise ValueError(f"stages: {stage.name!r} comes after {stage.after!r}, which is not an earlier stage")
        seen.append(stage.name)
        try:
            type(config).model_validate(merged_mapping(config, stage))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or 'stage'}: {error['msg']}" for error in exc.errors()
            )
            raise ValueError(f"stages: {stage.name!r} is not valid once merged over forge.yaml: {problems}") from None
