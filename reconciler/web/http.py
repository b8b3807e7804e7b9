"""What every blueprint shares: JSON bodies in, Error bodies out.

An error body is the seed's ``Error`` schema, ``{"message": ...}``, and its message starts with
the field it is about (``addresses[1]: 'x' is not an IP address``) so a client can act on it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from reconciler.errors import InputError

JSON = "application/json"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class HttpError(Exception):
    """Abort the request with ``status`` and an Error body."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def json_response(payload: object, status: int = 200) -> Response:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False) + "\n"
    return current_app.response_class(body, status=status, mimetype=JSON)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = json_response({"message": message}, status)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def no_content() -> Response:
    return current_app.response_class(status=204)


def show(value: str, limit: int = 80) -> str:
    """A client-supplied string quoted for a message, cut short if it is long."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def json_body() -> Any:
    """The request body decoded as JSON, or HttpError 400/413 naming the problem.

    The Content-Type is not checked: a booted server's ``curl -X PUT -d ...`` sends
    application/x-www-form-urlencoded, and refusing it would strand the server.
    """
    try:
        raw = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise HttpError(413, too_large()) from None
    if not raw.strip():
        raise HttpError(400, "request body: empty; expected a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeError:
        raise HttpError(400, "request body: not valid UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
        # Lone surrogates (\ud800) decode in Python but cannot be encoded again as UTF-8:
        # refuse them here rather than fail later while hashing or writing the request.
        if _SURROGATE_ESCAPE.search(text):
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeError:
        raise HttpError(400, "request body: not valid JSON: unpaired surrogate escape") from None
    except (ValueError, RecursionError) as exc:
        reason = " ".join(str(exc).split())
        raise HttpError(400, f"request body: not valid JSON: {reason}") from None
    return value


def too_large() -> str:
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    return f"request body: larger than the limit of {limit} bytes (max_request_bytes)"


def input_error(exc: InputError) -> HttpError:
    return HttpError(400, exc.message + (f" ({exc.hint})" if exc.hint else ""))
