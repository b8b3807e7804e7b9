"""GET/HEAD /artifacts/<id>/<filename>: a completed build's UKI and ISO, straight from disk.

Only the names in ``ARTIFACT_NAMES`` of a completed build resolve (the client's filename is
compared with that set, never joined into a path), so ``..``, encoded slashes or NUL reach
nothing. Conditional and range handling is :mod:`reconciler.web.ranges`; the body is a
:class:`~reconciler.web.filerange.FileRange` that the embedded server sends with sendfile.
"""

from __future__ import annotations

import os
import threading

from flask import Blueprint, Response, current_app, request

from reconciler.adapters.store import COMPLETED
from reconciler.web.filerange import FileRange
from reconciler.web.http import HttpError, error_response, show
from reconciler.web.ranges import FileInfo, decide, make_etag
from reconciler.web.services import services

bp = Blueprint("artifacts", __name__, url_prefix="/artifacts")

CONTENT_TYPES = {".efi": "application/efi", ".iso": "application/x-iso9660-image"}
DEFAULT_TYPE = "application/octet-stream"


def download_slots() -> threading.BoundedSemaphore:
    """Bodies being sent at once. Each holds an HTTP thread until it is done (sendfile), so
    past this many a download answers 503 + Retry-After instead of starving the JSON API."""
    slots: threading.BoundedSemaphore = current_app.extensions["reconciler.downloads"]
    return slots


def _not_found(build_id: str, filename: str) -> HttpError:
    record = services().store.get(build_id)
    if record is None:
        return HttpError(404, f"id: no build {show(build_id)}")
    if record.state != COMPLETED:
        return HttpError(404, f"id: build {record.id[:16]}... is {record.state}, not completed")
    return HttpError(404, f"filename: {show(filename)} is not an artifact of this build")


@bp.route("/<build_id>/<filename>", methods=["GET", "HEAD"])
def artifact(build_id: str, filename: str) -> Response:
    path = services().store.artifact_path(build_id, filename)
    if path is None:
        raise _not_found(build_id, filename)
    try:
        file = open(path, "rb")  # noqa: SIM115 - owned by the FileRange or closed below
    except FileNotFoundError:
        raise _not_found(build_id, filename) from None  # deleted a moment ago
    try:
        # fstat of the open file: size, mtime and body come from the same inode.
        st = os.fstat(file.fileno())
        info = FileInfo(
            size=st.st_size,
            mtime=st.st_mtime,
            etag=make_etag(st.st_size, st.st_mtime_ns, st.st_ino),
            content_type=CONTENT_TYPES.get(os.path.splitext(filename)[1], DEFAULT_TYPE),
        )
        decision = decide(request.method, dict(request.headers), info)
    except BaseException:
        file.close()
        raise
    if decision.status == 416:
        file.close()
        wanted = show(request.headers.get("Range", ""))
        message = f"Range: {wanted} is not satisfiable for {info.size} bytes"
        return error_response(416, message, dict(decision.headers))
    if request.method == "HEAD" or decision.length == 0:
        file.close()
        response = current_app.response_class(status=decision.status)
    else:
        slots = download_slots()
        if not slots.acquire(blocking=False):
            file.close()
            message = "artifacts: too many downloads in progress; retry later"
            return error_response(503, message, {"Retry-After": "5"})
        body = FileRange(file, decision.start, decision.length, on_close=slots.release)
        response = current_app.response_class(body, status=decision.status, direct_passthrough=True)
    for name, value in decision.headers:
        response.headers[name] = value
    return response
