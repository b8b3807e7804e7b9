"""Prometheus metrics: what the engine and the service count as they work, and what a scrape
reads from the current state.

Names follow controller-runtime (``kubernetes-sigs/controller-runtime:pkg/internal/controller/
metrics/metrics.go``: ``reconcile_total{result}`` with its four ``result`` values pre-set to 0)
and Metal3's ``provisioning_state_change_total{prev_state,new_state}``; the gauge of servers by
desired state and condition is what Metal3 lacks. Everything is prefixed ``reconciler_``, in base
units, counters end in ``_total`` (docs/operations.md lists them).

Event metrics are methods the engine and the web app call (:meth:`Metrics.reconciled`,
:meth:`Metrics.step_finished`, :meth:`Metrics.http_request`, ...). State metrics are read when
Prometheus scrapes, by a collector and no background thread: the state database (its own
read-only SQLite connection; WAL readers never block the loop's writer), the brake file, the
build queue and the checkin store. Each :class:`Metrics` has its own registry, never the
process-global one: a process (and a test session) may make several.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from reconciler.engine.brake import pause_file

LOG = logging.getLogger(__name__)

# The ``<name>_created`` series a counter adds double the series and tell nothing the process's
# start time does not. (A process-wide switch of prometheus_client; only this module sets it.)
disable_created_metrics()  # type: ignore[no-untyped-call]

# controller-runtime's result values.
RESULTS = ("success", "error", "requeue", "requeue_after")
# The desired states an inventory may name (reconciler.model.inventory.STATES, not imported: it
# costs 0.1 s of start-up; tests/unit/test_metrics.py keeps both equal).
STATES = ("provisioned", "inspected", "off", "unmanaged")
# One condition per server (:func:`condition_of`): the Flux conditions, then why it is left alone.
CONDITIONS = ("Ready", "Reconciling", "Stalled", "Suspended", "Unmanaged", "Orphaned", "Unknown")
_LEFT_ALONE = frozenset({"Suspended", "Unmanaged", "Orphaned"})
# A step takes from a tenth of a second (a Redfish PATCH) to an hour (writing an image).
STEP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                1200.0, 1800.0, 3600.0)
# Any other method a client sends is counted as "other": the label set stays bounded.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
UNMATCHED = "unmatched"  # the route of a request no endpoint matched (404, 405)


def condition_of(conditions: Iterable[Mapping[str, Any]]) -> str:
    """The one condition a server counts under: Stalled, then Reconciling, then Ready (each
    when True), else the reason it is left alone (Suspended, Unmanaged, Orphaned), else
    Unknown (no status yet, or Ready=False without Stalled)."""
    by_type = {c.get("type"): c for c in conditions if isinstance(c, Mapping)}
    for type_ in ("Stalled", "Reconciling", "Ready"):
        if by_type.get(type_, {}).get("status") == "True":
            return type_
    reason = by_type.get("Ready", {}).get("reason")
    return reason if reason in _LEFT_ALONE else "Unknown"


def applied_age(fleet: Mapping[str, Any], now: float) -> float | None:
    """Seconds since the fleet was last seen converged on its applied revision; None before
    it ever was. ``lastAppliedAt`` when the loop records it; until then, the last pass when it
    attempted the applied revision (a pass that attempts another one leaves the age unknown)."""
    if not fleet.get("lastAppliedRevision"):
        return None
    at = fleet.get("lastAppliedAt")
    if not isinstance(at, int | float) and \
            fleet.get("lastAttemptedRevision") == fleet["lastAppliedRevision"]:
        at = fleet.get("lastPassAt")
    if not isinstance(at, int | float):
        return None
    return max(0.0, now - float(at))


class Metrics:
    """The reconciler's metrics over its own registry. Every method is thread-safe.

    ``engine=False`` (``reconciler serve``, no loop): the engine's metrics are not exported,
    rather than shown as zeros nothing will ever count."""

    def __init__(self, *, clock: Callable[[], float] = time.time, engine: bool = True,
                 process: bool = True) -> None:
        self.registry = CollectorRegistry()
        r = self.registry if engine else None
        self._reconciles = Counter(
            "reconciler_reconcile_total",
            "Reconciles of a server by result (controller-runtime's values: success, error, "
            "requeue, requeue_after).", ["result"], registry=r)
        for result in RESULTS:
            self._reconciles.labels(result)
        self._errors = Counter(
            "reconciler_reconcile_errors_total", "Reconcile errors by type.", ["type"],
            registry=r)
        self._step_seconds = Histogram(
            "reconciler_step_duration_seconds", "Duration of a workflow's step, by workflow "
            "and step.", ["workflow", "step"], buckets=STEP_BUCKETS, registry=r)
        self._steps = Counter(
            "reconciler_steps_total", "Steps that ended, by workflow, step and result (ok, "
            "error, interrupted).", ["workflow", "step", "result"], registry=r)
        self._transitions = Counter(
            "reconciler_state_transitions_total", "Changes of a server's applied state "
            "(prev_state none: never reached one).", ["prev_state", "new_state"], registry=r)
        self._fetch_failures = Counter(
            "reconciler_git_fetch_failures_total", "Fetches of the inventory branch that "
            "failed (the loop went on with the last revision).", registry=r)
        self._http = Counter(
            "reconciler_http_requests_total", "HTTP requests answered, by route (the "
            "endpoint, not the path), method and status.", ["route", "method", "status"],
            registry=self.registry)
        # (route, method, status) -> the counter's child: the checkin PUT path pays a dict
        # lookup and an increment, not the label validation of ``labels()``.
        self._http_children: dict[tuple[str, str, int], Any] = {}
        self.current = CurrentState(clock)
        self.registry.register(self.current)
        if process:
            ProcessCollector(registry=self.registry)

    # -- the engine's events --------------------------------------------------------------

    def reconciled(self, result: str, count: int = 1) -> None:
        """``count`` servers reconciled with ``result`` (a pass adds its totals at once)."""
        if result not in RESULTS:
            raise ValueError(f"reconcile result {result!r}: expected one of {RESULTS}")
        if count:
            self._reconciles.labels(result).inc(count)

    def error(self, kind: str) -> None:
        self._errors.labels(kind).inc()

    def step_finished(self, workflow: str, step: str, seconds: float, result: str) -> None:
        self._step_seconds.labels(workflow, step).observe(max(0.0, seconds))
        self._steps.labels(workflow, step, result).inc()

    def transition(self, prev_state: str | None, new_state: str | None) -> None:
        self._transitions.labels(prev_state or "none", new_state or "none").inc()

    def fetch_failed(self) -> None:
        self._fetch_failures.inc()

    # -- the service's ---------------------------------------------------------------------

    def http_request(self, route: str, method: str, status: int) -> None:
        key = (route, method, status)
        child = self._http_children.get(key)
        if child is None:
            shown = method if method in METHODS else "other"
            child = self._http.labels(route, shown, str(status))
            if len(self._http_children) < 4096:  # routes and statuses are bounded anyway
                self._http_children[key] = child
        child.inc()

    # -- what a scrape reads -----------------------------------------------------------------

    def watch_fleet(self, data_dir: Path) -> None:
        """Report the fleet of the loop whose data directory this is (servers, applied
        revision, brake)."""
        self.current.data_dir = data_dir

    def watch_service(self, queue_depth: Callable[[], int],
                      checkins: Callable[[], Iterable[Any]]) -> None:
        """Report the build service's queue and checkin store."""
        self.current.queue_depth = queue_depth
        self.current.checkins = checkins


class CurrentState(Collector):
    """The gauges read at scrape time. Sources not set (``reconciler serve`` has no fleet) give
    no family."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.data_dir: Path | None = None
        self.queue_depth: Callable[[], int] | None = None
        self.checkins: Callable[[], Iterable[Any]] | None = None

    def describe(self) -> Iterator[Metric]:
        yield from _fleet_families()
        yield from _service_families()

    def collect(self) -> Iterator[Metric]:
        if self.data_dir is not None:
            yield from self._fleet(self.data_dir)
        if self.queue_depth is not None and self.checkins is not None:
            depth, checkins = _service_families()
            depth.add_metric([], self.queue_depth())
            waiting = reported = 0
            for record in self.checkins():
                if record.addresses:
                    reported += 1
                else:
                    waiting += 1
            checkins.add_metric(["waiting"], waiting)
            checkins.add_metric(["reported"], reported)
            yield from (depth, checkins)

    def _fleet(self, data_dir: Path) -> Iterator[Metric]:
        hosts, age, paused = _fleet_families()
        paused.add_metric([], 1.0 if pause_file(data_dir).exists() else 0.0)
        yield paused
        try:
            counts, fleet = read_state(data_dir / "state.db")
        except sqlite3.Error as exc:
            # The brake still shows; the gauges that need the database are left out rather
            # than reported as zeros.
            LOG.warning("metrics: cannot read %s: %s", data_dir / "state.db", exc)
            return
        states = list(STATES) + sorted({s for s, _ in counts} - set(STATES))
        for state in states:
            for condition in CONDITIONS:
                hosts.add_metric([state, condition], counts.get((state, condition), 0))
        yield hosts
        seconds = applied_age(fleet, self.clock())
        if seconds is not None:
            age.add_metric([], seconds)
        yield age


def _fleet_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily("reconciler_hosts", "Servers by desired state and condition (one "
                          "condition each: Stalled, Reconciling, Ready, else why it is left "
                          "alone, else Unknown).", labels=["desired_state", "condition"]),
        GaugeMetricFamily("reconciler_applied_revision_age_seconds", "Seconds since every "
                          "server was last seen converged on the applied revision."),
        GaugeMetricFamily("reconciler_paused", "1 while the emergency brake is set "
                          "(reconciler pause): no new step starts."),
    )


def _service_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily("reconciler_build_queue_depth", "Builds waiting for a worker."),
        GaugeMetricFamily("reconciler_checkins", "Registered checkin ids, waiting for their "
                          "server or reported.", labels=["state"]),
    )


_FLEET_KEYS = ("lastAppliedRevision", "lastAppliedAt", "lastAttemptedRevision", "lastPassAt")


def read_state(path: Path) -> tuple[dict[tuple[str, str], int], dict[str, Any]]:
    """((desired state, condition) -> servers, the fleet record's revision keys), read with a
    read-only connection of its own; nothing when the database does not exist yet."""
    if not path.exists():
        return {}, {}
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5,
                         check_same_thread=False)
    try:
        # Only the two fields the gauge needs: a record may hold a whole hardware report.
        rows = db.execute("SELECT json_extract(record, '$.desired_state'), "
                          "json_extract(record, '$.conditions') FROM hosts").fetchall()
        marks = ", ".join("?" * len(_FLEET_KEYS))
        fleet_rows = db.execute(f"SELECT key, value FROM fleet WHERE key IN ({marks})",
                                _FLEET_KEYS).fetchall()
    finally:
        db.close()
    counts: dict[tuple[str, str], int] = {}
    for state, conditions in rows:
        try:
            parsed = json.loads(conditions) if conditions else []
        except ValueError:
            parsed = []
        key = (str(state) if state else "unknown",
               condition_of(parsed if isinstance(parsed, list) else []))
        counts[key] = counts.get(key, 0) + 1
    fleet: dict[str, Any] = {}
    for key, value in fleet_rows:
        try:
            fleet[key] = json.loads(value)
        except ValueError:
            continue
    return counts, fleet
