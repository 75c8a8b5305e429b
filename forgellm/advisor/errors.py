"""Why an advisor could not answer. All are ForgeErrors, so the CLI shows them as Error / Fix."""

from __future__ import annotations

from forgellm.errors import ForgeError


class AdvisorError(ForgeError):
    """Base class: the advisor gave no usable answer."""


class AdvisorUnavailable(AdvisorError):
    """The server could not be reached, timed out, or kept failing (429/5xx) after the retries."""


class AdvisorAuthError(AdvisorError):
    """The server rejected the API key (401/403)."""


class AdvisorAnswerError(AdvisorError):
    """The answer was not valid JSON, did not match the schema, or failed the rule checks."""
