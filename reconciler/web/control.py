"""POST /api/v1/pause and /api/v1/resume: the emergency brake over HTTP.

The same brake as ``reconciler pause`` / ``resume`` (:mod:`reconciler.engine.brake`): no new
step starts fleet-wide while it is set, running steps end at their current step, and it
survives restarts. Trusted networks only (not in ``acl.PUBLIC``). ``by`` records
``api:<client address>``. 404 without a reconcile loop in this process.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, request

from reconciler.engine import brake
from reconciler.web.fleet import fleet
from reconciler.web.http import HttpError, decode_json, json_response, printable, request_body

LOG = logging.getLogger(__name__)

bp = Blueprint("control", __name__, url_prefix="/api/v1")

CLIENT = "reconciler.client"  # the environ key reconciler.web.app sets (the client address)


def _client() -> str:
    return str(request.environ.get(CLIENT) or request.remote_addr or "-")


def parse_reason(raw: bytes) -> str:
    """``{"reason": "..."}``, optional (an empty body is no reason)."""
    if not raw.strip():
        return ""
    body = decode_json(raw)
    if not isinstance(body, dict):
        raise HttpError(400, f"request body: expected an object, got {type(body).__name__}")
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise HttpError(400, f"reason: expected a string, got {type(reason).__name__}")
    if len(reason) > brake.MAX_REASON:
        raise HttpError(400, f"reason: longer than {brake.MAX_REASON} characters")
    return reason


@bp.post("/pause")
def pause() -> Response:
    link = fleet()
    reason = parse_reason(request_body())
    record = brake.pause(link.data_dir, f"api:{_client()}", reason)
    LOG.warning("paused by %s%s: no new step starts until resumed", printable(record.by),
                f" ({printable(record.reason)})" if record.reason else "")
    return json_response({"paused": True, **record.to_record()})


@bp.post("/resume")
def resume() -> Response:
    link = fleet()
    released = brake.read(link.data_dir)
    brake.resume(link.data_dir)
    if released is not None:
        LOG.warning("resumed by api:%s (paused by %s)", printable(_client()),
                    printable(released.by))
        link.wake()  # steps start at once, not at the next poll
    answer: dict[str, object] = {"paused": False}
    if released is not None:
        answer["released"] = released.to_record()
    return json_response(answer)
