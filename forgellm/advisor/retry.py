"""One retry policy for every advisor HTTP client: what retries, how long to wait, when to give up.

Only transient failures retry: 408, 429, 5xx, timeouts and refused or dropped connections. A rejected
key or a bad request would fail the same way again, so it surfaces at once. Waits grow exponentially
with jitter, so several forge runs sharing one quota do not retry in lockstep; a server's
Retry-After wins over the computed wait, up to a cap, so a long quota reset fails fast instead of
stalling the command for minutes.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from forgellm.advisor.errors import AdvisorUnavailable

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Backoff:
    """How long to wait between attempts. Seconds throughout."""

    base_seconds: float = 1.0  # first wait; doubles each attempt
    cap_seconds: float = 20.0  # longest computed wait
    retry_after_cap_seconds: float = 60.0  # longest wait a server may ask for


# Read at call time (not bound as a default argument), so a test or an embedding application can
# make every client fast by replacing this one value.
DEFAULT_BACKOFF = Backoff()


class TransientFailure(Exception):
    """One attempt failed in a way that may pass on its own. ``reason`` is shown to the user, so it
    never holds the API key; ``retry_after`` is the wait the server asked for, if any."""

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date. None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def call_with_retries(
    attempt: Callable[[], T],
    *,
    max_retries: int,
    who: str,
    fix: str,
    backoff: Backoff | None = None,
) -> T:
    """Run ``attempt`` until it returns, retrying each ``TransientFailure``.

    Any other exception passes through untouched. After ``max_retries + 1`` failed attempts, raises
    ``AdvisorUnavailable`` naming ``who`` failed (e.g. "Gemini"), the attempts made and the last failure.
    """
    import tenacity

    policy = backoff or DEFAULT_BACKOFF
    exponential = tenacity.wait_exponential_jitter(
        initial=policy.base_seconds, max=policy.cap_seconds, jitter=policy.base_seconds
    )

    def wait(state: tenacity.RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome else None
        if isinstance(failure, TransientFailure) and failure.retry_after is not None:
            return min(failure.retry_after, policy.retry_after_cap_seconds)
        return exponential(state)

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(0, max_retries) + 1),
        wait=wait,
        retry=tenacity.retry_if_exception_type(TransientFailure),
        reraise=True,
    )
    attempts = 0

    def counted() -> T:
        nonlocal attempts
        attempts += 1
        return attempt()

    try:
        return retrying(counted)
    except TransientFailure as failure:
        plural = "attempt" if attempts == 1 else "attempts"
        raise AdvisorUnavailable(
            f"{who} did not answer after {attempts} {plural}: {failure.reason}.", fix=fix
        ) from None
