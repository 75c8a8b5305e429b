"""The base of every forge.yaml section (its own module so the schema's parts can share it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """Common settings of every section: strict keys, checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    rationale: str | None = Field(
        default=None, description="Why these values were chosen (written by `forge plan` or by you)."
    )
