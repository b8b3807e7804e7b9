"""What every blueprint shares: JSON bodies in, Error bodies out.

An error body is the seed's ``Error`` schema, ``{"message": ...}``, and its message starts with
the field it is about (``addresses[1]: 'x' is not an IP address``) so a client can act on it.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import re
import threading
import time
from typing import Any

from flask import Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from reconciler.errors import InputError

JSON = "application/json"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")

ACCESS_LOG = logging.getLogger("reconciler.web.access")


class HttpError(Exception):
    """Abort the request with ``status`` and an Error body."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def json_bytes(payload: object) -> bytes:
    """A JSON body as both request paths (Flask and :mod:`reconciler.web.fast`) send it."""
    return (_ENCODER.encode(payload) + "\n").encode("utf-8")


def json_response(payload: object, status: int = 200) -> Response:
    return current_app.response_class(json_bytes(payload), status=status, mimetype=JSON)


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
    return decode_json(request_body())


def request_body() -> bytes:
    """The raw body of the Flask request, or HttpError 413."""
    try:
        return request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise HttpError(413, too_large()) from None


# One decoder for every request: json.loads with parse_constant builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def decode_json(raw: bytes) -> Any:
    """``raw`` decoded as JSON (UTF-8, no NaN/Infinity, no lone surrogates) or HttpError 400."""
    if not raw.strip():
        raise HttpError(400, "request body: empty; expected a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeError:
        raise HttpError(400, "request body: not valid UTF-8") from None
    try:
        if text.startswith("\ufeff"):  # what json.loads refuses before decoding
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        value = _DECODER.decode(text)
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


def too_large(limit: int | None = None) -> str:
    if limit is None:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
    return f"request body: larger than the limit of {limit} bytes (max_request_bytes)"


def printable(text: str) -> str:
    """``text`` safe for a log line: control characters (a percent-decoded ``%0A`` in a path
    would start a forged line, ``%1B`` a terminal escape) shown backslash-escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


# (time, (method, path, status, milliseconds, client))
_Line = tuple[float, tuple[str, str, int, float, str]]


class AccessLog:
    """One line per request (``METHOD PATH STATUS DURATIONms CLIENT``), written by one thread.

    Through ``Logger.info`` from 32 HTTP threads, the line cost a third of the throughput of
    the cheapest routes: ``findCaller`` walks the stack, and every thread contends for the
    handler's lock, a GIL hand-off each time. Here a request thread only queues a tuple
    (SimpleQueue, no Python-level lock); the writer thread makes the records, stamped with the
    request's own time, with control characters in what the client sent escaped
    (:func:`printable`), and hands them to the configured handlers in order. :meth:`flush`
    waits until everything queued is written (the server calls it when it stops, and at exit).
    A SIGKILL can lose the lines of the last milliseconds; nothing else is lost.
    """

    FORMAT = "%s %s %d %.1fms %s"

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._queue: queue.SimpleQueue[_Line | threading.Event] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def __call__(self, method: str, path: str, status: int, started: float, client: str) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        if self._thread is None:
            self._start()
        elapsed = (time.perf_counter() - started) * 1000
        self._queue.put((time.time(), (method, path, status, elapsed, client)))

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._write, name="access-log", daemon=True)
                thread.start()
                atexit.register(self.flush)
                self._thread = thread

    def _write(self) -> None:
        logger, get = self.logger, self._queue.get
        while True:
            item = get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            created, (method, path, status, elapsed, client) = item
            args = (printable(method), printable(path), status, elapsed, printable(client))
            record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, self.FORMAT,
                                       args, None)  # fmt: skip
            record.created = created
            record.msecs = int((created - int(created)) * 1000) + 0.0
            try:
                logger.handle(record)
            except Exception:  # noqa: BLE001 - a broken handler must not stop the log
                logging.exception("access log: writing a line failed")

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every line queued so far is written; False on timeout."""
        if self._thread is None or not self._thread.is_alive():
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)


# The one line per request, the same from both request paths.
log_access = AccessLog(ACCESS_LOG)


def input_error(exc: InputError) -> HttpError:
    return HttpError(400, exc.message + (f" ({exc.hint})" if exc.hint else ""))
