"""The build service as a Flask application: ``create_app(settings, services, fleet)``.

One blueprint per concern, registered from :data:`BLUEPRINTS`; every error is the seed's
``Error`` body; the ACL runs before any handler; one log line per request. Handlers never
run subprocesses: they validate and enqueue (builds), or serve files (artifacts, images).
"""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from reconciler.engine.metrics import UNMATCHED, Metrics
from reconciler.settings import ServiceSettings
from reconciler.web import acl, artifacts, builds, checkins, control, health, hooks, images
from reconciler.web import metrics as metrics_bp
from reconciler.web import status as status_bp
from reconciler.web.fast import FastFront
from reconciler.web.fleet import FleetLink
from reconciler.web.http import HttpError, error_response, log_access, printable, too_large
from reconciler.web.services import Services

LOG = logging.getLogger("reconciler.web.access")

STARTED, CLIENT = "reconciler.started", "reconciler.client"
API_THREADS = 4

# Blueprints in registration order.
BLUEPRINTS = [builds.bp, checkins.bp, artifacts.bp, images.bp, health.bp, metrics_bp.bp,
              hooks.bp, control.bp, status_bp.bp]


def create_app(settings: ServiceSettings, services: Services | None = None,
               fleet: FleetLink | None = None) -> Flask:
    """``fleet``: the reconcile loop of this process (``reconciler run``), for the status
    page, the fleet API, /metrics, the webhook and the brake; None for ``reconciler serve``."""
    app = Flask("reconciler.web")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["reconciler.settings"] = settings
    app.extensions["reconciler.services"] = services or Services.open(settings)
    app.extensions["reconciler.fleet"] = fleet
    # Leave a few HTTP threads of a listener for the API however many BMCs download.
    app.extensions["reconciler.downloads"] = threading.BoundedSemaphore(
        max(1, settings.threads - API_THREADS)
    )
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    # /metrics: the engine's registry under `reconciler run`, the service's own otherwise.
    metrics = fleet.metrics if fleet is not None and fleet.metrics is not None else \
        Metrics(engine=fleet is not None)
    checkin_store = app.extensions["reconciler.services"].checkins
    metrics.watch_service(app.extensions["reconciler.services"].queue.waiting,
                          lambda: checkin_store)
    if fleet is not None:
        metrics.watch_fleet(fleet.data_dir)
    app.extensions[metrics_bp.EXTENSION] = metrics

    classify = acl.Verdicts(settings.trusted, settings.trusted_proxies)
    public = acl.public_endpoints(settings.status_public)
    app.extensions["reconciler.verdicts"] = classify

    @app.before_request
    def check_access() -> Response | None:
        environ = request.environ
        environ[STARTED] = time.perf_counter()
        forwarded = environ.get("HTTP_X_FORWARDED_FOR") if settings.trusted_proxies else None
        trusted, client = classify(environ.get("REMOTE_ADDR", ""), forwarded)
        environ[CLIENT] = client
        if trusted:
            return None
        method = request.method
        if method in public.get(request.endpoint or "", ()):
            return None
        return error_response(
            403,
            f"client: {client} may not {method} {request.path} "
            "(only trusted networks may; others may PUT checkins and GET artifacts and images)",
        )

    @app.after_request
    def log_request(response: Response) -> Response:
        environ = request.environ
        log_access(
            environ.get("REQUEST_METHOD") or "-",
            request.path,
            response.status_code,
            environ.get(STARTED) or time.perf_counter(),
            environ.get(CLIENT) or environ.get("REMOTE_ADDR") or "-",
        )
        metrics.http_request(request.endpoint or UNMATCHED, request.method,
                             response.status_code)
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
        LOG.exception("%s %s: unhandled error", printable(request.method),
                      printable(request.path))
        return error_response(500, f"{request.path}: internal error ({type(exc).__name__})")

    # The hottest routes skip Flask's request machinery (reconciler/web/fast.py); the
    # original stays reachable for the tests that compare both paths.
    app.extensions["reconciler.flask_wsgi"] = app.wsgi_app
    app.wsgi_app = FastFront(  # type: ignore[method-assign]
        app.wsgi_app, settings, app.extensions["reconciler.services"], classify,
        app.extensions["reconciler.downloads"], metrics.http_request,
    )
    return app
