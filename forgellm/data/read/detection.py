"""What format detection found: the format, the recipe that maps the file's fields to roles, how sure it
is, why, and the other readings it considered. Made by the format detectors (formats, shapes, documents,
threads), read by study, plan and prepare."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from forgellm.config.schema import RecipeSection


@dataclass(frozen=True)
class Detection:
    """The detected format, the recipe to apply it, how sure we are (0..1), and why.

    ``alternatives`` are the other readings that scored, best first; a caller that finds the chosen
    recipe does not fit the file (``data/prepare/fit.py``) tries them in that order."""

    format: str
    recipe: RecipeSection
    confidence: float
    reasons: list[str]
    warnings: list[str] = field(default_factory=list)
    alternatives: list[Detection] = field(default_factory=list)
    fits: bool | None = None  # checked against the file (data/prepare/fit.py): True, False, or None = not checked

    @property
    def shape(self) -> str:
        """The format with the recipe's columns, in a few words: ``qa (user=question, assistant=answer)``."""
        parts = [f"{k}={'+'.join(v) if isinstance(v, list) else v}" for k, v in self.recipe.columns.items()]
        return f"{self.format} ({', '.join(parts)})" if parts else self.format

    def readings(self) -> list[Detection]:
        """This reading and its alternatives, best first, without their own alternatives."""
        from dataclasses import replace

        return [replace(self, alternatives=[]), *self.alternatives]

    def to_dict(self) -> dict[str, Any]:
        out = {
            "format": self.format,
            "recipe": self.recipe.model_dump(mode="json", exclude_defaults=True),
            "confidence": round(self.confidence, 3),
            "reasons": list(self.reasons),
            "warnings": list(self.warnings),
            "fits": self.fits,
        }
        if self.alternatives:
            out["alternatives"] = [
                {"format": a.format, "recipe": a.recipe.model_dump(mode="json", exclude_defaults=True),
                 "confidence": round(a.confidence, 3), "shape": a.shape, "why": a.reasons[0] if a.reasons else ""}
                for a in self.alternatives
            ]  # fmt: skip
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Detection:
        """The reverse of to_dict (alternatives keep their first reason only)."""
        alternatives = [
            cls(a["format"], RecipeSection.model_validate(a.get("recipe") or {}), float(a.get("confidence", 0)),
                [a.get("why", "")] if a.get("why") else [])
            for a in data.get("alternatives") or []
        ]  # fmt: skip
        return cls(
            data["format"], RecipeSection.model_validate(data.get("recipe") or {}), float(data.get("confidence", 0)),
            list(data.get("reasons") or []), list(data.get("warnings") or []), alternatives,
        )  # fmt: skip
