"""One small error hierarchy.

Every message is one line that names the offending input exactly as the user wrote it
(a YAML key, a request field, a flag, a file). ``hint`` says what to do about it.

Failures are classified where they are raised (kopf's TemporaryError/PermanentError,
Flux's Waiting/Stalling): a :class:`TemporaryError` is retried after ``delay`` seconds,
a :class:`PermanentError` is not retried until the desired state changes.
"""

from __future__ import annotations


class ReconcilerError(Exception):
    """Base of every error this project raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message


class InputError(ReconcilerError):
    """Bad input from the user: a flag, a file, a request field. Exit status 2."""

    exit_code = 2


class ToolMissing(ReconcilerError):
    """An external program or file the operation needs is not installed."""

    exit_code = 2


class ToolFailed(ReconcilerError):
    """An external program ran and failed."""


class TemporaryError(ReconcilerError):
    """Worth retrying after ``delay`` seconds (timeouts, 5xx, races)."""

    def __init__(self, message: str, *, delay: float = 10.0, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.delay = delay


class PermanentError(ReconcilerError):
    """Retrying will not help until the desired state or the environment changes."""
