"""POST/GET/DELETE /api/v1/builds: submit, poll, list, delete (the seed's build endpoints)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, request

from reconciler.adapters.store import ARTIFACT_NAMES, COMPLETED, BuildRecord, format_time
from reconciler.engine.buildqueue import BuildQueue, QueueFull
from reconciler.errors import InputError
from reconciler.settings import ServiceSettings
from reconciler.web.http import (
    HttpError,
    decode_json,
    input_error,
    json_response,
    no_content,
    request_body,
    show,
)
from reconciler.web.services import services, settings

bp = Blueprint("builds", __name__, url_prefix="/api/v1/builds")


def status_of(record: BuildRecord) -> dict[str, Any]:
    """The seed's BuildStatus; artifact URLs only once the build completed."""
    status: dict[str, Any] = {
        "id": record.id,
        "state": record.state,
        "createdAt": format_time(record.created_at),
    }
    if record.completed_at is not None:
        status["completedAt"] = format_time(record.completed_at)
    if record.error is not None:
        status["error"] = record.error
    if record.state == COMPLETED:
        base = settings().public_tls_url if record.tls_artifacts else settings().public_url
        prefix = f"{base}/artifacts/{record.id}"
        status["artifacts"] = {
            "ukiUrl": f"{prefix}/{ARTIFACT_NAMES['uki']}",
            "isoUrl": f"{prefix}/{ARTIFACT_NAMES['iso']}",
        }
    return status


def submit_build(
    queue: BuildQueue, settings_: ServiceSettings, raw: bytes, scheme: str
) -> tuple[dict[str, str], str]:
    """POST's work, shared with the fast path (:mod:`reconciler.web.fast`).

    Returns the 202 body and its Location; raises HttpError (400, 503).
    """
    body = decode_json(raw)
    wants_tls = isinstance(body, dict) and body.get("tlsArtifacts") is True
    if wants_tls and not settings_.public_tls_url:
        raise HttpError(
            400, "tlsArtifacts: this service has no HTTPS base URL (configure tls_cert and tls_key)"
        )
    try:
        record, _created = queue.submit(body)
    except InputError as exc:
        raise input_error(exc) from None
    except QueueFull as exc:
        raise HttpError(503, f"{exc.message}; retry later", {"Retry-After": "5"}) from None
    tls_base = scheme == "https" and settings_.public_tls_url
    base = settings_.public_tls_url if tls_base else settings_.public_url
    accepted = {"id": record.id, "statusUrl": f"{base}/api/v1/builds/{record.id}"}
    return accepted, f"/api/v1/builds/{record.id}"


@bp.post("")
def create() -> Response:
    accepted, location = submit_build(services().queue, settings(), request_body(), request.scheme)
    response = json_response(accepted, 202)
    response.headers["Location"] = location
    return response


@bp.get("")
def list_builds() -> Response:
    return json_response([status_of(r) for r in services().store.list()])


@bp.delete("")
def purge() -> Response:
    count = services().queue.purge()
    current_app.logger.info("purged %d builds", count)
    return no_content()


def _record(build_id: str) -> BuildRecord:
    record = services().store.get(build_id)
    if record is None:
        raise HttpError(404, f"id: no build {show(build_id)}")
    return record


@bp.get("/<build_id>")
def get(build_id: str) -> Response:
    return json_response(status_of(_record(build_id)))


@bp.delete("/<build_id>")
def delete(build_id: str) -> Response:
    if not services().queue.delete(build_id):
        raise HttpError(404, f"id: no build {show(build_id)}")
    return no_content()
