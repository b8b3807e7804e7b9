"""What the service's listener knows of the reconcile loop running in the same process.

``reconciler run`` starts the build service embedded and hands it a :class:`FleetLink`; the
status page, the JSON API (``/api/v1/hosts``, ``/api/v1/revision``), ``/metrics``, the git
webhook and the pause/resume endpoints use it. ``reconciler serve`` alone has no link: those
routes answer 404 (there is no fleet to show).

The web threads never touch the engine's objects: they read the state database with their own
connection (SQLite WAL: readers do not block the writer), read the brake file, and wake the
loop through a thread-safe callable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import current_app

from reconciler.web.http import HttpError


@dataclass(frozen=True)
class FleetLink:
    data_dir: Path  # the loop's data directory: state.db, paused.json
    branch: str  # the watched branch (a webhook for another branch starts nothing)
    wake: Callable[[], None]  # thread-safe: start a reconcile pass now (fetch first)
    # The webhook's shared secret, resolved from its credentials reference at start; None:
    # no webhook configured (the route answers 404). Never logged, never shown.
    webhook_secret: bytes | None = field(default=None, repr=False)
    # The engine's metrics (reconciler.engine.metrics.Metrics) for /metrics; None: only the
    # service's own.
    metrics: Any = None

    @property
    def state_db(self) -> Path:
        return self.data_dir / "state.db"


def fleet() -> FleetLink:
    """The link of the running loop, or 404 when this service runs without one."""
    link: FleetLink | None = current_app.extensions.get("reconciler.fleet")
    if link is None:
        raise HttpError(404, "no reconcile loop runs in this service (`reconciler run` "
                        "serves the fleet's status; `reconciler serve` alone does not)")
    return link
