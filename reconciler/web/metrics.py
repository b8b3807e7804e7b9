"""GET /metrics: the Prometheus text exposition (OpenMetrics when the scraper asks for it).

Trusted networks only (not in ``acl.PUBLIC``). Under ``reconciler run`` the registry is the
engine's (:class:`reconciler.engine.metrics.Metrics` on the FleetLink) and shows the fleet;
under ``reconciler serve`` the service makes its own and shows HTTP requests, the build queue
and checkins.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request
from prometheus_client.exposition import choose_encoder

from reconciler.engine.metrics import Metrics

bp = Blueprint("metrics", __name__)

EXTENSION = "reconciler.metrics"


def metrics() -> Metrics:
    found: Metrics = current_app.extensions[EXTENSION]
    return found


@bp.get("/metrics")
def scrape() -> Response:
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = current_app.response_class(encode(metrics().registry))
    response.headers["Content-Type"] = content_type
    return response
