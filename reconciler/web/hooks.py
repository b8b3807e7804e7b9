"""POST /api/v1/hooks/git: a git host's push to the watched branch starts a pass at once.

Open to untrusted clients (the git host is rarely on a trusted network), so nothing is read
from a delivery before its signature is verified against the shared secret (the run setting
``webhook_secret``, a credentials reference resolved at start), each in constant time
(``hmac.compare_digest``):

==========================  =============================================================
header                      what it holds
==========================  =============================================================
``X-Hub-Signature-256``     GitHub (and Gitea): ``sha256=`` + hex HMAC-SHA256 of the body
``X-Gitea-Signature``       Gitea: hex HMAC-SHA256 of the body (also ``X-Gogs-Signature``)
``X-Forgejo-Signature``     Forgejo: the same
``X-Gitlab-Token``          GitLab: the secret itself
==========================  =============================================================

Every one of these a delivery carries must verify, and it must carry one. GitHub's SHA-1
``X-Hub-Signature`` is never enough on its own (Flux's receiver falls back to it; SHA-1 HMACs
are not what a new integration should trust). A refused delivery gets 401 and one log line
naming the client and the header, never the body or the signature.

Then: a ping is answered (200); a push whose ``ref`` is ``refs/heads/<branch>`` wakes the loop
(202); any other push or event is acknowledged and ignored (202), so a replayed issue comment
never starts a fetch. The wake only sets the event the loop consumes once per pass
(:func:`reconciler.engine.loop.run_forever`): a burst of pushes costs one or two fetches.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from flask import Blueprint, Response, request
from werkzeug.datastructures import Headers

from reconciler.web.fleet import FleetLink, fleet
from reconciler.web.http import HttpError, decode_json, json_response, printable, request_body

LOG = logging.getLogger(__name__)

bp = Blueprint("hooks", __name__, url_prefix="/api/v1/hooks")

CLIENT = "reconciler.client"  # the environ key reconciler.web.app sets (the client address)


def _sha256_hex(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, body, hashlib.sha256).hexdigest().encode("ascii")


def _github(value: bytes, secret: bytes, body: bytes) -> bool:
    scheme, _, digest = value.partition(b"=")
    # Compared even under a wrong scheme: the time taken says nothing about the secret.
    matches = hmac.compare_digest(_sha256_hex(secret, body), digest.strip().lower())
    return matches and scheme.strip().lower() == b"sha256"


def _hex(value: bytes, secret: bytes, body: bytes) -> bool:
    return hmac.compare_digest(_sha256_hex(secret, body), value.strip().lower())


def _token(value: bytes, secret: bytes, body: bytes) -> bool:
    return hmac.compare_digest(value, secret)


# Signature header -> its check. Every one present must verify; at least one must be present.
SIGNATURES: tuple[tuple[str, Callable[[bytes, bytes, bytes], bool]], ...] = (
    ("X-Hub-Signature-256", _github),
    ("X-Gitea-Signature", _hex),
    ("X-Forgejo-Signature", _hex),
    ("X-Gogs-Signature", _hex),
    ("X-Gitlab-Token", _token),
)
SHA1_ONLY = "X-Hub-Signature"
# The event's name, by host (Gitea sends its own and GitHub's and Gogs' headers, all equal).
EVENTS = ("X-GitHub-Event", "X-Gitea-Event", "X-Forgejo-Event", "X-Gogs-Event",
          "X-Gitlab-Event")
PUSH = frozenset({"push", "push hook"})  # GitHub, Gitea, Forgejo, Gogs; GitLab's "Push Hook"
PING = frozenset({"ping"})


def verify(headers: Headers, body: bytes, secret: bytes) -> str | None:
    """None when the delivery is signed with ``secret``, else why not (no secret material)."""
    present = [(name, check) for name, check in SIGNATURES if name in headers]
    if not present:
        if SHA1_ONLY in headers:
            return (f"{SHA1_ONLY} (HMAC-SHA1) is not accepted: sign with SHA-256 "
                    "(X-Hub-Signature-256)")
        names = ", ".join(name for name, _ in SIGNATURES)
        return f"not signed: none of {names}"
    for name, check in present:
        value = headers[name].encode("latin-1", "replace")  # how WSGI hands headers over
        if not check(value, secret, body):
            return f"{name}: does not match the webhook secret"
    return None


def event_of(headers: Headers) -> str | None:
    return next((headers[name] for name in EVENTS if name in headers), None)


def payload_of(body: bytes, content_type: str) -> Any:
    """A delivery's JSON: the body, or GitHub's form encoding (``payload=<json>``)."""
    if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(body.decode("utf-8"), strict_parsing=True)
        except (UnicodeError, ValueError):
            raise HttpError(400, "request body: not a form with a payload field") from None
        if len(fields.get("payload", ())) != 1:
            raise HttpError(400, "payload: expected one form field holding the JSON delivery")
        return decode_json(fields["payload"][0].encode("utf-8"))
    return decode_json(body)


def _answer(result: str, message: str, status: int) -> Response:
    return json_response({"result": result, "message": message}, status)


@bp.post("/git")
def git() -> Response:
    link = fleet()
    if link.webhook_secret is None:
        raise HttpError(404, "no webhook is configured (the run setting webhook_secret)")
    client = printable(str(request.environ.get(CLIENT) or request.remote_addr or "-"))
    body = request_body()  # bounded by max_request_bytes: 413 beyond
    why = verify(request.headers, body, link.webhook_secret)
    if why is not None:
        LOG.warning("webhook from %s refused: %s", client, why)
        raise HttpError(401, f"webhook refused: {why}")
    return handle(link, event_of(request.headers), body,
                  request.headers.get("Content-Type", ""), client)


def handle(link: FleetLink, event: str | None, body: bytes, content_type: str,
           client: str) -> Response:
    """A verified delivery."""
    if event is None:
        names = ", ".join(EVENTS)
        raise HttpError(400, f"no event header: expected one of {names}")
    shown = printable(event[:60])
    kind = event.strip().lower()
    if kind in PING:
        LOG.info("webhook from %s: ping", client)
        return _answer("pong", f"ping answered; a push to {link.branch} starts a fetch", 200)
    if kind not in PUSH:
        return _answer("ignored", f"event {shown!r}: only a push starts a fetch", 202)
    payload = payload_of(body, content_type)
    ref = payload.get("ref") if isinstance(payload, dict) else None
    if not isinstance(ref, str):
        raise HttpError(400, "ref: required in a push delivery (a string: refs/heads/<branch>)")
    watched = f"refs/heads/{link.branch}"
    if ref != watched:
        return _answer("ignored", f"push to {printable(ref[:200])!r}: not the watched branch "
                       f"{watched}", 202)
    link.wake()
    LOG.info("webhook from %s: push to %s: fetching now", client, watched)
    return _answer("fetch", f"push to {watched}: fetching now", 202)
