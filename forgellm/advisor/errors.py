"""Why an advisor could not answer. All are ForgeErrors, so the CLI shows them as Error / Fix.

Each class has one error code: the class already says which failure it is, so its raise sites do not
repeat it (``select`` re-raises ``type(exc)(...)`` with a masked message and keeps the code that way).
"""

from __future__ import annotations

from typing import Any, ClassVar

from forgellm.errors import ErrorCode, ForgeError


class AdvisorError(ForgeError):
    """Base class: the advisor gave no usable answer."""

    error_code: ClassVar[ErrorCode] = ErrorCode.ADVISOR_UNAVAILABLE

    def __init__(
        self,
        message: str,
        *,
        fix: str | None = None,
        details: list[str] | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=self.error_code, fix=fix, details=details, data=data)


class AdvisorUnavailable(AdvisorError):
    """The server could not be reached, timed out, or kept failing (429/5xx) after the retries."""

    error_code = ErrorCode.ADVISOR_UNAVAILABLE


class AdvisorAuthError(AdvisorError):
    """The server rejected the API key (401/403)."""

    error_code = ErrorCode.ADVISOR_AUTH


class AdvisorAnswerError(AdvisorError):
    """The answer was not valid JSON, did not match the schema, or failed the rule checks."""

    error_code = ErrorCode.ADVISOR_ANSWER_INVALID
