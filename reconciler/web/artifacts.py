"""GET/HEAD /artifacts/<id>/<filename>: a completed build's UKI and ISO, straight from disk.

Only the names in ``ARTIFACT_NAMES`` of a completed build resolve (the client's filename is
compared with that set, never joined into a path), so ``..``, encoded slashes or NUL reach
nothing. Conditional and range handling is :mod:`reconciler.web.ranges`; the body is a
:class:`~reconciler.web.filerange.FileRange` that the embedded server sends with sendfile.
:func:`serve_file` is that machinery for any open file; published images
(:mod:`reconciler.web.images`) are served through it too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import BinaryIO

from flask import Blueprint, Response, current_app, request

from reconciler.adapters.store import COMPLETED, BuildStore
from reconciler.web.filerange import FileRange
from reconciler.web.http import HttpError, show
from reconciler.web.ranges import FileInfo, decide, make_etag
from reconciler.web.services import services

bp = Blueprint("artifacts", __name__, url_prefix="/artifacts")

CONTENT_TYPES = {".efi": "application/efi", ".iso": "application/x-iso9660-image"}
DEFAULT_TYPE = "application/octet-stream"
# Status, headers, body (None: no body) of a file download.
Answer = tuple[int, tuple[tuple[str, str], ...], FileRange | None]


def download_slots() -> threading.BoundedSemaphore:
    """Bodies being sent at once. Each holds an HTTP thread until it is done (sendfile), so
    past this many a download answers 503 + Retry-After instead of starving the JSON API."""
    slots: threading.BoundedSemaphore = current_app.extensions["reconciler.downloads"]
    return slots


def _not_found(store: BuildStore, build_id: str, filename: str) -> HttpError:
    record = store.get(build_id)
    if record is None:
        return HttpError(404, f"id: no build {show(build_id)}")
    if record.state != COMPLETED:
        return HttpError(404, f"id: build {record.id[:16]}... is {record.state}, not completed")
    return HttpError(404, f"filename: {show(filename)} is not an artifact of this build")


def serve_artifact(
    store: BuildStore,
    slots: threading.BoundedSemaphore,
    method: str,
    build_id: str,
    filename: str,
    headers: Mapping[str, str],
) -> Answer:
    """Status, headers and body (None: no body) of GET/HEAD /artifacts/<id>/<filename>.

    Raises :class:`HttpError` for 404, 416 and 503. ``headers`` are the request's, named as
    werkzeug names them (``Range``, ``If-Range``, ``If-None-Match``, ``If-Modified-Since``).
    The Flask view and the fast path (:mod:`reconciler.web.fast`) both answer through this.
    """
    path = store.artifact_path(build_id, filename)
    if path is None:
        raise _not_found(store, build_id, filename)
    try:
        file = open(path, "rb")  # noqa: SIM115 - owned by the FileRange or closed in serve_file
    except FileNotFoundError:
        raise _not_found(store, build_id, filename) from None  # deleted a moment ago
    content_type = CONTENT_TYPES.get(os.path.splitext(filename)[1], DEFAULT_TYPE)
    return serve_file(file, content_type, slots, method, headers, "artifacts")


def serve_file(
    file: BinaryIO,
    content_type: str,
    slots: threading.BoundedSemaphore,
    method: str,
    headers: Mapping[str, str],
    what: str,
) -> Answer:
    """The answer for an open file (artifacts, published images): conditional and range
    handling, 416, HEAD, a download slot for the body. Owns ``file``: it ends up in the
    FileRange or closed. ``what`` starts the 503 message (``artifacts: too many ...``)."""
    try:
        # fstat of the open file: size, mtime and body come from the same inode.
        st = os.fstat(file.fileno())
        info = FileInfo(
            size=st.st_size,
            mtime=st.st_mtime,
            etag=make_etag(st.st_size, st.st_mtime_ns, st.st_ino),
            content_type=content_type,
        )
        decision = decide(method, headers, info)
    except BaseException:
        file.close()
        raise
    if decision.status == 416:
        file.close()
        wanted = show(headers.get("Range", ""))
        message = f"Range: {wanted} is not satisfiable for {info.size} bytes"
        raise HttpError(416, message, dict(decision.headers))
    if method == "HEAD" or decision.length == 0:
        file.close()
        return decision.status, decision.headers, None
    if not slots.acquire(blocking=False):
        file.close()
        raise HttpError(503, f"{what}: too many downloads in progress; retry later",
                        {"Retry-After": "5"})
    body = FileRange(file, decision.start, decision.length, on_close=slots.release)
    return decision.status, decision.headers, body


def file_response(answer: Answer) -> Response:
    """A Flask response for what :func:`serve_file` decided (the body goes out by sendfile)."""
    status, headers, body = answer
    if body is None:
        response = current_app.response_class(status=status)
    else:
        response = current_app.response_class(body, status=status, direct_passthrough=True)
    for name, value in headers:
        response.headers[name] = value
    return response


@bp.route("/<build_id>/<filename>", methods=["GET", "HEAD"])
def artifact(build_id: str, filename: str) -> Response:
    return file_response(serve_artifact(services().store, download_slots(), request.method,
                                        build_id, filename, dict(request.headers)))
