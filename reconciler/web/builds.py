"""POST/GET/DELETE /api/v1/builds: submit, poll, list, delete (the seed's build endpoints)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, request

from reconciler.adapters.store import ARTIFACT_NAMES, COMPLETED, BuildRecord, format_time
from reconciler.engine.buildqueue import QueueFull
from reconciler.errors import InputError
from reconciler.web.http import HttpError, input_error, json_body, json_response, no_content, show
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


def _status_url(build_id: str) -> str:
    s = settings()
    base = s.public_tls_url if request.scheme == "https" and s.public_tls_url else s.public_url
    return f"{base}/api/v1/builds/{build_id}"


@bp.post("")
def create() -> Response:
    body = json_body()
    wants_tls = isinstance(body, dict) and body.get("tlsArtifacts") is True
    if wants_tls and not settings().public_tls_url:
        raise HttpError(
            400, "tlsArtifacts: this service has no HTTPS base URL (configure tls_cert and tls_key)"
        )
    try:
        record, _created = services().queue.submit(body)
    except InputError as exc:
        raise input_error(exc) from None
    except QueueFull as exc:
        raise HttpError(503, f"{exc.message}; retry later", {"Retry-After": "5"}) from None
    response = json_response({"id": record.id, "statusUrl": _status_url(record.id)}, 202)
    response.headers["Location"] = f"/api/v1/builds/{record.id}"
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
