"""The one exception type users see. The CLI renders it as a message plus a fix, never a traceback."""

from __future__ import annotations


class ForgeError(Exception):
    """A problem the user can act on: ``message`` says what is wrong, ``fix`` says what to do."""

    def __init__(self, message: str, *, fix: str | None = None, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        # Several independent problems found at once (e.g. every invalid key of forge.yaml).
        self.details = list(details or [])

    def __str__(self) -> str:
        parts = [self.message, *(f"  - {d}" for d in self.details)]
        if self.fix:
            parts.append(f"Fix: {self.fix}")
        return "\n".join(parts)
