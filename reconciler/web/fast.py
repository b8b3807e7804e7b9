"""The hot requests without Flask: a WSGI front that answers them itself.

A booted server's checkin ``PUT``, a resubmitted ``POST /api/v1/builds``, ``GET /healthz`` and
the artifact ``GET``/``HEAD`` a BMC repeats for every range it reads are most of the traffic;
a published image's ``GET``/``HEAD`` (``/images/<name>``) is a download like an artifact's.
Through Flask each costs a request and an app context, URL matching, before/after hooks and a
werkzeug Response, several times the handler's own work.
:class:`FastFront` wraps the Flask app's ``wsgi_app`` and answers exactly those routes with the
same functions the blueprints call (``checkins.update_checkin``, ``builds.submit_build``,
``artifacts.serve_artifact``, ``images.serve_image``, ``http.decode_json``/``json_bytes``), the
same ACL table (``acl.PUBLIC``), the same access log line and request count
(``Metrics.http_request``) and byte-identical responses
(tests/unit/test_service_fast.py and test_service_images.py compare both paths).
Anything else, or anything unusual about one of those requests (a path the router would treat
differently, a refused client, a chunked body), goes to Flask untouched, before the body is read.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.http import HTTP_STATUS_CODES, remove_entity_headers

from reconciler.settings import ServiceSettings
from reconciler.web.acl import PUBLIC, Verdicts
from reconciler.web.artifacts import Answer, serve_artifact
from reconciler.web.builds import submit_build
from reconciler.web.checkins import update_checkin
from reconciler.web.filerange import FileRange
from reconciler.web.http import (
    ACCESS_LOG,
    JSON,
    HttpError,
    json_bytes,
    log_access,
    printable,
    too_large,
)
from reconciler.web.images import serve_image
from reconciler.web.services import Services

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Headers = list[tuple[str, str]]

CHECKINS = "/api/v1/checkins/"
ID_AT = len(CHECKINS)
ARTIFACTS = "/artifacts/"
IMAGES = "/images/"
# The request headers the artifact and image routes read, by WSGI name -> werkzeug's name.
_CONDITIONAL = (("HTTP_RANGE", "Range"), ("HTTP_IF_RANGE", "If-Range"),
                ("HTTP_IF_NONE_MATCH", "If-None-Match"),
                ("HTTP_IF_MODIFIED_SINCE", "If-Modified-Since"))
# Ids the fast path takes: what werkzeug's default converter matches and shows unchanged.
# Anything else (non-ASCII, '%'-decoded bytes, ...) is Flask's to route.
_PLAIN = r"[A-Za-z0-9._~:@!$&'()*+,;=-]+"
_PLAIN_ID = re.compile(_PLAIN + r"\Z")
# /artifacts/<id>/<filename> with both parts plain (so exactly one '/' between them).
_ARTIFACT = re.compile(_PLAIN + "/" + _PLAIN + r"\Z")

# Flask's spelling of status lines (werkzeug upper-cases the reason) and of an empty 204.
STATUS = {code: f"{code} {HTTP_STATUS_CODES[code].upper()}" for code in HTTP_STATUS_CODES}
NO_CONTENT: Headers = [("Content-Type", "text/html; charset=utf-8")]
OK = b"ok\n"
HEALTH: Headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "3")]


class _Defer(Exception):
    """Hand this request to Flask (raised before anything is read or answered)."""


class FastFront:
    def __init__(
        self,
        flask_wsgi: WsgiApp,
        settings: ServiceSettings,
        services: Services,
        verdicts: Verdicts,
        downloads: threading.BoundedSemaphore,
        count: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self.flask_wsgi = flask_wsgi
        self.settings = settings
        self.services = services
        self.verdicts = verdicts
        self.downloads = downloads
        self.max_body = settings.max_request_bytes
        self.proxies = bool(settings.trusted_proxies)
        self.published = os.fspath(settings.published_dir)
        # Metrics.http_request: (endpoint, method, status) of each request answered here.
        self.count = count or _uncounted

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        # (endpoint, handler): the endpoint names the Flask view, for the ACL table.
        if path == "/healthz" and (method == "GET" or method == "HEAD"):
            endpoint = "health.healthz"
        elif path == "/api/v1/builds" and method == "POST":
            endpoint = "builds.create"
        elif method == "PUT" and path.startswith(CHECKINS) and _PLAIN_ID.match(path, ID_AT):
            endpoint = "checkins.update"
        elif (method == "GET" or method == "HEAD") and path.startswith(ARTIFACTS) and (
            _ARTIFACT.match(path, len(ARTIFACTS))
        ):
            endpoint = "artifacts.artifact"
        elif (method == "GET" or method == "HEAD") and path.startswith(IMAGES) and (
            _PLAIN_ID.match(path, len(IMAGES))
        ):
            endpoint = "images.image"
        else:
            return self.flask_wsgi(environ, start_response)
        started = time.perf_counter()
        forwarded = environ.get("HTTP_X_FORWARDED_FOR") if self.proxies else None
        trusted, client = self.verdicts(environ.get("REMOTE_ADDR", ""), forwarded)
        if not trusted and method not in PUBLIC.get(endpoint, ()):
            return self.flask_wsgi(environ, start_response)  # Flask words the 403
        try:
            status, headers, body = self._answer(endpoint, method, path, environ)
        except _Defer:
            return self.flask_wsgi(environ, start_response)
        except HttpError as exc:
            status, headers, body = _error(exc.status, exc.message, exc.headers)
        except Exception as exc:  # noqa: BLE001 - the same 500 as Flask's handler
            ACCESS_LOG.exception("%s %s: unhandled error", printable(method), printable(path))
            status, headers, body = _error(500, f"{path}: internal error ({type(exc).__name__})")
        start_response(STATUS[status], headers)
        log_access(method, path, status, started, client)
        self.count(endpoint, method, status)
        if isinstance(body, FileRange):
            return body  # the server sends it with sendfile and closes it (slot, file)
        return [body] if body and method != "HEAD" else []

    def _answer(
        self, endpoint: str, method: str, path: str, environ: dict[str, Any]
    ) -> tuple[int, Headers, bytes | FileRange]:
        if endpoint == "artifacts.artifact":
            return self._artifact(method, path, environ)
        if endpoint == "images.image":
            return self._image(method, path, environ)
        if endpoint == "health.healthz":
            return 200, list(HEALTH), OK
        raw = self._body(environ, path)
        if endpoint == "checkins.update":
            update_checkin(self.services.checkins, path[ID_AT:], raw)
            return 204, list(NO_CONTENT), b""
        accepted, location = submit_build(
            self.services.queue, self.settings, raw, environ.get("wsgi.url_scheme", "http")
        )
        body = json_bytes(accepted)
        headers = [("Content-Type", JSON), ("Content-Length", str(len(body))),
                   ("Location", location)]  # fmt: skip
        return 202, headers, body

    def _artifact(
        self, method: str, path: str, environ: dict[str, Any]
    ) -> tuple[int, Headers, bytes | FileRange]:
        build_id, filename = path[len(ARTIFACTS):].split("/")  # the caller matched _ARTIFACT
        wanted = {name: environ[key] for key, name in _CONDITIONAL if key in environ}
        return _download(serve_artifact(self.services.store, self.downloads, method,
                                        build_id, filename, wanted))

    def _image(
        self, method: str, path: str, environ: dict[str, Any]
    ) -> tuple[int, Headers, bytes | FileRange]:
        wanted = {name: environ[key] for key, name in _CONDITIONAL if key in environ}
        return _download(serve_image(self.published, self.downloads, method,
                                     path[len(IMAGES):], wanted))

    def _body(self, environ: dict[str, Any], path: str) -> bytes:
        if "HTTP_TRANSFER_ENCODING" in environ:
            raise _Defer  # chunked: werkzeug's reader knows the details
        length = environ.get("CONTENT_LENGTH") or ""
        if not length:
            return b""
        if not (length.isascii() and length.isdigit()):
            raise _Defer
        size = int(length)
        if size > self.max_body:
            raise HttpError(413, too_large(self.max_body))
        raw: bytes = environ["wsgi.input"].read(size)
        if len(raw) != size:  # the client went away mid-body (werkzeug: ClientDisconnected)
            raise HttpError(400, f"{path}: Bad Request")
        return raw


def _uncounted(endpoint: str, method: str, status: int) -> None:
    return None


def _download(answer: Answer) -> tuple[int, Headers, bytes | FileRange]:
    """A file download's answer with the headers as Flask would send them."""
    status, extra, body = answer
    # Flask's order: its default Content-Type first (replaced in place), then the rest.
    content_type = "text/html; charset=utf-8"
    headers: Headers = []
    for name, value in extra:
        if name == "Content-Type":
            content_type = value
        else:
            headers.append((name, value))
    headers.insert(0, ("Content-Type", content_type))
    if status == 304:
        remove_entity_headers(headers)  # what werkzeug does to a 304 on its way out
    return status, headers, b"" if body is None else body


def _error(
    status: int, message: str, extra: dict[str, str] | None = None
) -> tuple[int, Headers, bytes]:
    body = json_bytes({"message": message})
    headers = [("Content-Type", JSON), ("Content-Length", str(len(body)))]
    headers += (extra or {}).items()
    return status, headers, body
