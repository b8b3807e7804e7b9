"""/api/v1/checkins: the rendezvous between the orchestrator and a booted server.

The orchestrator registers an id (POST), the booted server reports its addresses (PUT, the
only write an untrusted client may make, and only to a registered id), the orchestrator polls
(GET) and cleans up (DELETE). Registered ids are persisted, so a server's PUT loop still
succeeds after the service restarts.
"""

from __future__ import annotations

import functools
import ipaddress

from flask import Blueprint, Response

from reconciler.adapters.store import Checkin, CheckinStore
from reconciler.web.http import (
    HttpError,
    decode_json,
    json_body,
    json_response,
    no_content,
    request_body,
    show,
)
from reconciler.web.services import services

bp = Blueprint("checkins", __name__, url_prefix="/api/v1/checkins")

MAX_ADDRESSES = 1024


def parse_addresses(body: object) -> tuple[str, ...]:
    """The seed's CheckinRequest: ``{"addresses": [ip, ...]}``; unknown keys are ignored."""
    if not isinstance(body, dict):
        raise HttpError(400, f"request body: expected an object, got {type(body).__name__}")
    if "addresses" not in body:
        raise HttpError(400, "addresses: required")
    addresses = body["addresses"]
    if not isinstance(addresses, list):
        raise HttpError(400, f"addresses: expected an array, got {type(addresses).__name__}")
    if len(addresses) > MAX_ADDRESSES:
        raise HttpError(400, f"addresses: more than {MAX_ADDRESSES} entries")
    parsed = []
    for i, value in enumerate(addresses):
        if not isinstance(value, str):
            raise HttpError(400, f"addresses[{i}]: expected a string, got {type(value).__name__}")
        # Only short strings go through the cache: it must not hold megabytes of junk.
        normal = canonical_address(value) if len(value) <= 64 else _canonical(value)
        if normal is None:
            raise HttpError(400, f"addresses[{i}]: {show(value)} is not an IP address")
        parsed.append(normal)
    return tuple(parsed)


def _canonical(text: str) -> str | None:
    """The address as ipaddress writes it, or None."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


# Cached: a server reports the same few addresses in every PUT, and parsing an IPv6 address
# costs more than the rest of the request's handling.
canonical_address = functools.lru_cache(maxsize=4096)(_canonical)


def _view(record: Checkin) -> Response:
    return json_response(record.to_record())


@bp.post("/<checkin_id>")
def register(checkin_id: str) -> Response:
    services().checkins.register(checkin_id, parse_addresses(json_body()))
    return no_content()


def update_checkin(store: CheckinStore, checkin_id: str, raw: bytes) -> None:
    """PUT's work, shared with the fast path (:mod:`reconciler.web.fast`): 204 or HttpError."""
    addresses = parse_addresses(decode_json(raw))
    if store.update(checkin_id, addresses) is None:
        raise HttpError(404, f"id: checkin {show(checkin_id)} is not registered")


@bp.put("/<checkin_id>")
def update(checkin_id: str) -> Response:
    update_checkin(services().checkins, checkin_id, request_body())
    return no_content()


@bp.get("/<checkin_id>")
def get(checkin_id: str) -> Response:
    record = services().checkins.get(checkin_id)
    if record is None:
        raise HttpError(404, f"id: no checkin {show(checkin_id)}")
    return _view(record)


@bp.delete("/<checkin_id>")
def delete(checkin_id: str) -> Response:
    if not services().checkins.delete(checkin_id):
        raise HttpError(404, f"id: no checkin {show(checkin_id)}")
    return no_content()


@bp.delete("")
def purge() -> Response:
    services().checkins.purge()
    return no_content()
