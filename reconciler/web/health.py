"""GET /healthz (liveness, plain text) and GET /api/v1/openapi.yaml (the service's contract)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from reconciler.paths import schemas_dir

bp = Blueprint("health", __name__)

OPENAPI = "openapi.yaml"


@bp.route("/healthz", methods=["GET", "HEAD"])
def healthz() -> Response:
    return current_app.response_class("ok\n", mimetype="text/plain")


@bp.get("/api/v1/openapi.yaml")
def openapi() -> Response:
    text = (schemas_dir() / OPENAPI).read_text(encoding="utf-8")
    return current_app.response_class(text, mimetype="application/yaml")
