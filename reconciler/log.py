"""Logging setup and secret redaction.

Secrets (BMC passwords, private keys) are registered with :func:`register_secret` as soon as
they are read; the filter installed by :func:`setup` replaces them in every record before any
handler formats it, the same idea as sushy's ``utils.sanitize``.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from typing import Any

REDACTED = "***"

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None

# Shapes that are secret whatever registered them.
_SHAPES = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----"
    r"|(?<=://)[^/@\s:]+:[^/@\s]+(?=@)",
    re.DOTALL,
)


def register_secret(value: str) -> None:
    """Never let ``value`` reach a log line, an error message or a status page."""
    global _pattern
    if not value or len(value) < 3:
        # Too short to redact without mangling ordinary text; such a secret is not a secret.
        return
    with _lock:
        _secrets.add(value)
        longest_first = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in longest_first))


def redact(text: str) -> str:
    """Return ``text`` with every registered secret and secret-shaped run replaced."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    return _SHAPES.sub(REDACTED, text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message or record.args:
            record.msg = clean
            record.args = None
        return True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not when it was made.

    The access log is written by a thread of its own; a stream captured at setup time (a
    test runner's, a redirected one) may be closed by then.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def setup(level: int = logging.INFO) -> None:
    """Configure the root logger once: one line per record, secrets redacted."""
    root = logging.getLogger()
    if any(isinstance(f, RedactingFilter) for h in root.handlers for f in h.filters):
        root.setLevel(level)
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
