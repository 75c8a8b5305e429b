"""What format detection found: the format, the recipe that maps the file's fields to roles, how sure it
is, and why. Made by the format detectors (formats, formats_documents), read by study, plan and prepare."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from forgellm.config.schema import RecipeSection


@dataclass(frozen=True)
class Detection:
    """The detected format, the recipe to apply it, how sure we are, and why."""

    format: str
    recipe: RecipeSection
    confidence: float
    reasons: list[str]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "recipe": self.recipe.model_dump(mode="json", exclude_defaults=True),
            "confidence": round(self.confidence, 3),
            "reasons": list(self.reasons),
            "warnings": list(self.warnings),
        }
