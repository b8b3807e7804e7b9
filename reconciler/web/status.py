"""The read-only status page and the fleet API of the reconcile loop in this process.

- ``GET /status``: the fleet revision, the brake, counts by condition, one row per server;
  ``?condition=`` / ``?sync=`` filter the rows (``reconciler.engine.statusview.FILTERS``),
  ``?refresh=0`` stops the page's self-refresh (every 10 s, ``<meta http-equiv=refresh>``).
  ``GET /`` redirects there.
- ``GET /hosts/<name>``: one server, its conditions, last error and step history.
- ``GET /api/v1/hosts`` (same filters), ``/api/v1/hosts/<name>``, ``/api/v1/revision``: JSON.

Every answer is built from :func:`reconciler.engine.statusview.status_record`, the record
``reconciler status --json`` prints. Server-rendered HTML without JavaScript or forms: nothing
here changes anything. Server names, messages and commit subjects come from the inventory, a
hostile input: the templates' Jinja environment escapes everything (autoescape on, no
``|safe``), and the Content-Security-Policy forbids any script as a second line.

Without a FleetLink (``reconciler serve`` alone) every route answers 404 with an Error body.
Untrusted clients get 403 unless ``status_public: true`` (``reconciler.web.acl.STATUS``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import cache
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from flask import Blueprint, Response, current_app, request

from reconciler.engine import statusview
from reconciler.errors import InputError
from reconciler.web.fleet import FleetLink, fleet
from reconciler.web.http import HttpError, input_error, json_response, show

bp = Blueprint("status", __name__)

REFRESH_SECONDS = 10
WORST = {"Stalled": 0, "Reconciling": 1}  # the page's row order
HTML = "text/html; charset=utf-8"
# No script, no form, no frame, no outside resource: the page is markup and inline style.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


# --- routes ---------------------------------------------------------------------------------


@bp.get("/")
def root() -> Response:
    """The page lives at /status; its filters and ``refresh`` carry over."""
    fleet()  # 404 without a loop, as the page
    kept = {k: v for k in (*statusview.FILTERS, "refresh") if (v := request.args.get(k))}
    response = current_app.response_class(status=302)
    response.headers["Location"] = "/status" + ("?" + urlencode(kept) if kept else "")
    return response


@bp.get("/status")
def page() -> Response:
    link = fleet()
    condition, sync = _filters()
    record = _record(link, condition=condition, sync=sync)
    # Worst first (Argo CD's worst-child roll-up): Stalled, then Reconciling, then by name.
    rows = sorted(record["hosts"], key=lambda r: WORST.get(r["condition"], len(WORST)))
    return _page("fleet.html", record=record, rows=rows, condition=condition, sync=sync,
                 status=statusview)


@bp.get("/hosts/<name>")
def host_page(name: str) -> Response:
    link = fleet()
    try:
        record = _record(link, server=name)
    except HttpError as exc:
        if exc.status != 404:
            raise
        return _page("missing.html", status_code=404, name=name)
    return _page("host.html", record=record, row=record["hosts"][0], status=statusview)


@bp.get("/api/v1/hosts")
def hosts() -> Response:
    condition, sync = _filters()
    return json_response(_record(fleet(), condition=condition, sync=sync))


@bp.get("/api/v1/hosts/<name>")
def host(name: str) -> Response:
    record = _record(fleet(), server=name)
    return json_response(record["hosts"][0])


@bp.get("/api/v1/revision")
def revision() -> Response:
    record = statusview.revision_record(fleet().data_dir)
    return json_response({**record["revision"], "paused": record["paused"] is not None,
                          "pause": record["paused"]})


# --- helpers --------------------------------------------------------------------------------


def _filters() -> tuple[str | None, str | None]:
    args = request.args
    try:
        return (statusview.check_filter("condition", args.get("condition")),
                statusview.check_filter("sync", args.get("sync")))
    except InputError as exc:
        raise input_error(exc) from None


def _record(link: FleetLink, server: str | None = None, **filters: str | None) -> dict[str, Any]:
    try:
        return statusview.status_record(link.data_dir, server, missing_ok=True, **filters)
    except statusview.UnknownServer:
        raise HttpError(404, f"name: no server {show(server or '')} in the reconciler's "
                        "state") from None
    except InputError as exc:
        raise input_error(exc) from None


def _refresh() -> bool:
    return request.args.get("refresh", "") not in ("0", "off", "no", "false")


def _page(template: str, status_code: int = 200, **context: Any) -> Response:
    refresh = _refresh()
    filters = {k: request.args.get(k) or None for k in statusview.FILTERS}
    html = _templates().get_template(template).render(
        now=time.time(), refresh=refresh, refresh_seconds=REFRESH_SECONDS,
        query=lambda **params: _query(refresh, params),
        toggle_url=_url(request.path, _query(not refresh, filters)), **context)
    response = current_app.response_class(html, status=status_code, content_type=HTML)
    response.headers.update(PAGE_HEADERS)
    return response


def _url(path: str, query: str) -> str:
    """``path`` (as routed: decoded) quoted again for a link, with ``query``."""
    return quote(path) + query


def _query(refresh: bool, params: Mapping[str, str | None]) -> str:
    """A link's query string: ``params`` (None drops one), keeping ``refresh=0``."""
    kept = {k: v for k, v in params.items() if v is not None}
    if not refresh:
        kept["refresh"] = "0"
    return "?" + urlencode(kept) if kept else ""


# --- the templates' environment -------------------------------------------------------------


@cache
def _templates() -> jinja2.Environment:
    """reconciler/web/page/*.html. Autoescape on for every template, whatever its name;
    an undefined name is an error, not an empty string."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("reconciler.web", "page"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=when, duration=duration, short=short_revision,
                       segment=lambda name: quote(str(name), safe=""))
    env.globals.update(headline=headline, operation_seconds=operation_seconds)
    return env


def headline(row: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The condition a row's message comes from: the one its health is named after, else
    Ready (Unknown: suspended, unmanaged, orphaned)."""
    conds = {c["type"]: c for c in row["conditions"]}
    found: Mapping[str, Any] | None = conds.get(row["condition"]) or conds.get("Ready")
    return found


def operation_seconds(runs: list[Mapping[str, Any]]) -> float | None:
    """The steps' durations summed; None while one of them runs."""
    if any(r["seconds"] is None for r in runs):
        return None
    return float(sum(r["seconds"] for r in runs))


def when(stamp: float | None) -> str:
    """Unix time as UTC (``2026-12-04 09:40:07 UTC``), or ``-``."""
    if stamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


def duration(seconds: float | None) -> str:
    """``42 s``, ``4 min 12 s``, ``3 h 05 min``, ``2 d 04 h``; ``-`` for None."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if seconds < 10:
        return f"{max(0.0, seconds):.1f} s"
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600:02d} h"


def short_revision(revision: str | None) -> str:
    """``main@sha1:<40 hex>`` -> its first 12 hex digits (as ``reconciler status`` shows)."""
    if not revision:
        return "-"
    return revision.rsplit("@sha1:", 1)[-1][:12]
