"""Redfish failures, classified where they happen.

One table maps an HTTP status (and, for races, a Redfish MessageId) onto the project's error
hierarchy: :class:`~reconciler.errors.TemporaryError` (retry later: the BMC is down, busy, or
in a power/POST race) or :class:`~reconciler.errors.PermanentError` (retrying will not help:
bad credentials, an operation the BMC does not implement, a request it rejects).

Every message is one line naming the BMC, the operation and what Redfish itself said
(``error.message`` and each ``@Message.ExtendedInfo`` entry). Messages pass through
:func:`reconciler.log.redact`, so a registered password can never appear in them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from reconciler.errors import PermanentError, ReconcilerError, TemporaryError
from reconciler.log import redact


class BmcUnreachable(TemporaryError):
    """No connection could be made (refused, no route, connect timeout, DNS)."""


class BmcBusy(TemporaryError):
    """The BMC answered 5xx, or a retryable race (POST in progress, power transition)."""


class BmcOutcomeUnknown(TemporaryError):
    """A POST/PATCH was sent but no answer came: it may or may not have taken effect.

    It is never resent automatically (a Reset must not happen twice); the caller re-reads
    the state before deciding what to do next.
    """


class BmcAuthFailed(PermanentError):
    """401/403: the credentials are wrong or lack the privilege."""


class BmcUnsupported(PermanentError):
    """The BMC does not implement the operation (405/501, missing action or resource)."""


class BmcRejected(PermanentError):
    """The BMC understood and refused the request (other 4xx)."""


class BmcTlsError(PermanentError):
    """TLS handshake or certificate verification failed."""


class BmcProtocolError(PermanentError):
    """The BMC answered something that is not the Redfish we need (bad JSON, missing field)."""


class BmcTimeout(TemporaryError):
    """A wait (for a power state, for media to show up) ran past its deadline."""


# Status -> (error class, short reason). Consulted after the race check below.
STATUS_CLASSES: dict[int, tuple[type[ReconcilerError], str]] = {
    400: (BmcRejected, "bad request"),
    401: (BmcAuthFailed, "authentication failed"),
    403: (BmcAuthFailed, "not authorised"),
    404: (BmcRejected, "not found"),
    405: (BmcUnsupported, "method not allowed"),
    409: (BmcRejected, "conflict"),
    412: (BmcRejected, "precondition failed"),
    415: (BmcRejected, "unsupported media type"),
    501: (BmcUnsupported, "not implemented"),
}

AUTH_HINT = "check the credentials reference and the account's privileges on the BMC"


def extended_info(body: object) -> list[Mapping[str, Any]]:
    """The ``@Message.ExtendedInfo`` entries of an error body, as a list.

    Handles the iDRAC shape where it is one object instead of a list (catalogue Q35), and
    the annotation sitting beside ``error`` instead of inside it.
    """
    if not isinstance(body, Mapping):
        return []
    error = body.get("error")
    raw = None
    if isinstance(error, Mapping):
        raw = error.get("@Message.ExtendedInfo")
    if raw is None:
        raw = body.get("@Message.ExtendedInfo")
    if isinstance(raw, Mapping):
        return [raw]
    if isinstance(raw, list):
        return [m for m in raw if isinstance(m, Mapping)]
    return []


def message_ids(body: object) -> list[str]:
    """MessageIds of the error (the ``error.code`` too), e.g. ``Base.1.8.PropertyMissing``."""
    ids = [str(m.get("MessageId", "")) for m in extended_info(body)]
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        code = body["error"].get("code")
        if code:
            ids.append(str(code))
    return [i for i in ids if i]


def short_id(message_id: str) -> str:
    """``Base.1.8.ActionParameterValueConflict`` -> ``ActionParameterValueConflict``."""
    return message_id.rsplit(".", 1)[-1]


def has_message(body: object, names: Iterable[str]) -> bool:
    """True when any MessageId (last dotted part) or message text mentions one of ``names``."""
    wanted = set(names)
    if not wanted:
        return False
    if any(short_id(i) in wanted for i in message_ids(body)):
        return True
    text = describe_body(body)
    return any(name in text for name in wanted)


def describe_body(body: object) -> str:
    """Redfish's own words: ``error.message`` then each ExtendedInfo MessageId and Message."""
    if isinstance(body, str):
        return " ".join(body.split())[:300]
    parts: list[str] = []
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            code = error.get("code")
            msg = error.get("message")
            head = ": ".join(str(x) for x in (code, msg) if x)
            if head:
                parts.append(head)
    for info in extended_info(body):
        mid = info.get("MessageId", "")
        msg = info.get("Message", "")
        related = info.get("RelatedProperties")
        entry = ": ".join(str(x) for x in (mid, msg) if x)
        if related:
            entry += f" (properties: {', '.join(map(str, related))})"
        if entry and entry not in parts:
            parts.append(entry)
    return "; ".join(parts)


def http_error(
    *,
    bmc: str,
    operation: str,
    method: str,
    path: str,
    status: int,
    body: object,
    race_ids: Iterable[str] = (),
) -> ReconcilerError:
    """Classify an HTTP error answer into one of the classes above, with a one-line message."""
    said = describe_body(body)
    detail = f"HTTP {status} from {method} {path}" + (f": {said}" if said else "")
    if has_message(body, race_ids):
        cls: type[ReconcilerError] = BmcBusy
        reason = "BMC busy (race)"
    elif status >= 500 and status != 501:
        cls, reason = BmcBusy, "BMC error"
    else:
        cls, reason = STATUS_CLASSES.get(status, (BmcRejected, "rejected"))
    hint = AUTH_HINT if cls is BmcAuthFailed else None
    return make(cls, bmc=bmc, operation=operation, text=f"{reason}: {detail}", hint=hint)


def make(
    cls: type[ReconcilerError],
    *,
    bmc: str,
    operation: str,
    text: str,
    hint: str | None = None,
    delay: float | None = None,
) -> ReconcilerError:
    """Build ``cls`` with the standard one-line message, redacted."""
    message = redact(" ".join(f"BMC {bmc}: {operation}: {text}".split()))
    if issubclass(cls, TemporaryError):
        if delay is not None:
            return cls(message, delay=delay, hint=hint)
        return cls(message, hint=hint)
    return cls(message, hint=hint)
