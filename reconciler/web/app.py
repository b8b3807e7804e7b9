"""The build service as a Flask application: ``create_app(settings, services=None)``.

One blueprint per concern, registered from :data:`BLUEPRINTS`; every error is the seed's
``Error`` body; the ACL runs before any handler; one log line per request. Handlers never
run subprocesses: they validate and enqueue (builds), or serve files (artifacts).
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from reconciler.settings import ServiceSettings
from reconciler.web import acl, artifacts, builds, checkins, health
from reconciler.web.http import HttpError, error_response, too_large
from reconciler.web.services import Services

LOG = logging.getLogger("reconciler.web.access")

# Blueprints in registration order; the status page and the git webhook join this list.
BLUEPRINTS = [builds.bp, checkins.bp, artifacts.bp, health.bp]


def create_app(settings: ServiceSettings, services: Services | None = None) -> Flask:
    app = Flask("reconciler.web")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["reconciler.settings"] = settings
    app.extensions["reconciler.services"] = services or Services.open(settings)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)

    @app.before_request
    def check_access() -> Response | None:
        g.started = time.perf_counter()
        forwarded = request.headers.get("X-Forwarded-For") if settings.trusted_proxies else None
        client = acl.client_address(
            request.remote_addr or "", forwarded, settings.trusted_proxies
        )
        g.client = str(client) if client is not None else (request.remote_addr or "-")
        if acl.allowed(client, settings.trusted, request.endpoint, request.method):
            return None
        return error_response(
            403,
            f"client: {g.client} may not {request.method} {request.path} "
            "(only trusted networks may; others may PUT checkins and GET artifacts)",
        )

    @app.after_request
    def log_request(response: Response) -> Response:
        started = g.get("started", time.perf_counter())
        LOG.info(
            "%s %s %d %.1fms %s",
            request.method,
            request.path,
            response.status_code,
            (time.perf_counter() - started) * 1000,
            g.get("client", request.remote_addr),
        )
        return response

    @app.errorhandler(HttpError)
    def http_error(exc: HttpError) -> Response:
        return error_response(exc.status, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def werkzeug_error(exc: HTTPException) -> Response:
        if isinstance(exc, RequestEntityTooLarge):
            return error_response(413, too_large())
        # Keep what werkzeug adds (Allow on 405), drop its HTML content type.
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return error_response(exc.code or 500, f"{request.path}: {exc.name}", headers)

    @app.errorhandler(Exception)
    def crash(exc: Exception) -> Response:
        LOG.exception("%s %s: unhandled error", request.method, request.path)
        return error_response(500, f"{request.path}: internal error ({type(exc).__name__})")

    return app
