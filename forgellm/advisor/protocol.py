"""The seams of the advisor: what every backend answers, and what an HTTP model client does.

Backends: ``rules`` (offline, deterministic), ``gemini`` and ``openai`` (an LLM behind a
``JsonClient``). Planning, prepare and training talk to an ``Advisor`` only; they never know which
backend answered. The LLM proposes, deterministic code disposes: every answer is a pydantic model
from ``schemas`` and is checked again by rules before it reaches forge.yaml.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pydantic import BaseModel

    from forgellm.advisor.schemas import (
        DataRequest,
        DiagnosisRequest,
        ExamplesProposal,
        ExamplesRequest,
        Fix,
        PlanProposal,
        PlanRequest,
        RecipeProposal,
        ScriptProposal,
        ScriptRequest,
    )


class Advisor(Protocol):
    """Proposes; never writes files. ``notes`` collects what the run should tell the user
    (what was sent where, fallbacks, cache hits)."""

    name: str  # "rules" | "gemini" | "openai"
    notes: list[str]

    def understand_data(self, request: DataRequest) -> RecipeProposal: ...

    def propose_plan(self, request: PlanRequest) -> PlanProposal: ...

    def diagnose(self, request: DiagnosisRequest) -> Fix | None: ...

    def write_script(self, request: ScriptRequest) -> ScriptProposal: ...

    def write_examples(self, request: ExamplesRequest) -> ExamplesProposal:
        """New records in the style of the seeds (synthetic expansion); the rules raise ADVISOR_CANNOT."""
        ...


class JsonClient(Protocol):
    """One LLM endpoint that answers a prompt with JSON text shaped by a schema.

    Raises ``AdvisorAuthError`` (key rejected), ``AdvisorUnavailable`` (network, timeout, 429/5xx
    after retries). Returns the raw text: parsing and validation belong to the caller, so a
    malformed answer is handled in one place for every provider.
    """

    provider: str  # "gemini" | "openai"
    model: str

    def generate_json(self, *, system: str, prompt: str, schema: type[BaseModel]) -> str: ...
