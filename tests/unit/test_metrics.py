"""Metrics: the engine's events, the gauges read at scrape time from a real state database and
brake file, and GET /metrics through the app (both request paths counted, trusted only)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.adapters.statedb import StateDB
from reconciler.engine import brake
from reconciler.engine.metrics import (
    CONDITIONS,
    RESULTS,
    STATES,
    STEP_BUCKETS,
    Metrics,
    applied_age,
    condition_of,
)
from reconciler.plan import conditions
from reconciler.plan.status import HostStatus
from tests.fixtures.fleet_app import UNTRUSTED, fleet_app

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(metrics: Metrics) -> Samples:
    text = generate_latest(metrics.registry).decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_the_engine_events_are_counted_under_their_names() -> None:
    m = Metrics(process=False)
    before = scrape(m)
    # controller-runtime pre-sets every result to 0.
    assert {r: value(before, "reconciler_reconcile_total", result=r) for r in RESULTS} == \
        dict.fromkeys(RESULTS, 0.0)
    assert value(before, "reconciler_git_fetch_failures_total") == 0.0
    m.reconciled("success")
    m.reconciled("requeue_after")
    m.error("bmc")
    m.step_finished("provision", "write-image", 95.0, "ok")
    m.step_finished("provision", "write-image", 0.02, "error")
    m.transition(None, "off")
    m.transition("off", "provisioned")
    m.fetch_failed()
    s = scrape(m)
    assert value(s, "reconciler_reconcile_total", result="success") == 1.0
    assert value(s, "reconciler_reconcile_total", result="requeue_after") == 1.0
    assert value(s, "reconciler_reconcile_errors_total", type="bmc") == 1.0
    step = {"workflow": "provision", "step": "write-image"}
    assert value(s, "reconciler_step_duration_seconds_count", **step) == 2.0
    assert value(s, "reconciler_step_duration_seconds_bucket", le="0.1", **step) == 1.0
    assert value(s, "reconciler_step_duration_seconds_bucket", le="60.0", **step) == 1.0
    assert value(s, "reconciler_step_duration_seconds_bucket", le="120.0", **step) == 2.0
    assert value(s, "reconciler_steps_total", result="ok", **step) == 1.0
    assert value(s, "reconciler_state_transitions_total", prev_state="none",
                 new_state="off") == 1.0
    assert value(s, "reconciler_state_transitions_total", prev_state="off",
                 new_state="provisioned") == 1.0
    assert value(s, "reconciler_git_fetch_failures_total") == 1.0
    assert STEP_BUCKETS[0] == 0.1 and STEP_BUCKETS[-1] == 3600.0
    # No _created series: they double the series count and say nothing.
    assert not any(name.endswith("_created") for name, _ in s)


def test_an_unknown_result_is_a_bug_the_caller_hears_of() -> None:
    with pytest.raises(ValueError, match="'done'"):
        Metrics(process=False).reconciled("done")


def test_http_labels_stay_bounded() -> None:
    m = Metrics(process=False)
    for method in ("GET", "BREW", "PROPFIND"):
        m.http_request("unmatched", method, 404)
    m.http_request("checkins.update", "PUT", 204)
    m.http_request("checkins.update", "PUT", 204)
    s = scrape(m)
    assert value(s, "reconciler_http_requests_total", route="unmatched", method="other",
                 status="404") == 2.0
    assert value(s, "reconciler_http_requests_total", route="checkins.update", method="PUT",
                 status="204") == 2.0


def test_the_states_are_the_inventory_s() -> None:
    from reconciler.model.inventory import STATES as INVENTORY_STATES

    assert STATES == INVENTORY_STATES


@pytest.mark.parametrize(("status", "expected"), [
    (conditions.ready(HostStatus("a"), "up to date"), "Ready"),
    (conditions.progressing(HostStatus("a"), "provision"), "Reconciling"),
    (conditions.progressing(HostStatus("a"), "retry", retry=True), "Reconciling"),
    (conditions.stalled(HostStatus("a"), "Protected", "blocked"), "Stalled"),
    (conditions.idle(HostStatus("a"), "Suspended", "suspend: true"), "Suspended"),
    (conditions.idle(HostStatus("a"), "Unmanaged", "unmanaged"), "Unmanaged"),
    (conditions.idle(HostStatus("a"), "Orphaned", "gone from git"), "Orphaned"),
    (HostStatus("a"), "Unknown"),
])  # fmt: skip
def test_one_condition_per_server(status: HostStatus, expected: str) -> None:
    assert condition_of(c.to_record() for c in status.conditions) == expected
    assert expected in CONDITIONS


def fill(data_dir: Path) -> StateDB:
    db = StateDB(data_dir / "state.db")
    db.put_many({
        "a": conditions.ready(HostStatus("a", desired_state="provisioned"), "ok"),
        "b": conditions.ready(HostStatus("b", desired_state="provisioned"), "ok"),
        "c": conditions.stalled(HostStatus("c", desired_state="provisioned"),
                                "WriteImageFailed", "disk"),
        "d": conditions.progressing(HostStatus("d", desired_state="off"), "power-off"),
        "e": conditions.idle(HostStatus("e", desired_state="unmanaged"), "Unmanaged", "-"),
        # A hardware report makes a big record; the gauge reads only two fields of it.
        "f": conditions.ready(HostStatus("f", desired_state="inspected",
                                         inspection={"disks": ["x" * 100] * 100}), "ok"),
    })
    return db


def test_the_fleet_gauges_read_the_state_database_and_the_brake(tmp_path: Path) -> None:
    db = fill(tmp_path)
    db.set_fleet(lastAppliedRevision="main@sha1:1", lastAttemptedRevision="main@sha1:1",
                 lastPassAt=1000.0)
    now = [1030.0]
    m = Metrics(clock=lambda: now[0], process=False)
    m.watch_fleet(tmp_path)
    s = scrape(m)
    hosts = {(lbl[0][1], lbl[1][1]): v for (name, lbl), v in s.items()
             if name == "reconciler_hosts"}
    # Every known state and condition has its row, zeros kept.
    assert set(hosts) == {(c, st) for st in STATES for c in CONDITIONS}
    assert sum(hosts.values()) == 6
    assert hosts[("Ready", "provisioned")] == 2 and hosts[("Stalled", "provisioned")] == 1
    assert hosts[("Reconciling", "off")] == 1 and hosts[("Unmanaged", "unmanaged")] == 1
    assert hosts[("Ready", "inspected")] == 1 and hosts[("Ready", "off")] == 0
    assert value(s, "reconciler_applied_revision_age_seconds") == 30.0
    assert value(s, "reconciler_paused") == 0.0
    brake.pause(tmp_path, "cli:test", "firmware")
    db.set_fleet(lastAppliedAt=1010.0)
    s = scrape(m)
    assert value(s, "reconciler_paused") == 1.0
    assert value(s, "reconciler_applied_revision_age_seconds") == 20.0
    db.close()


def test_applied_age() -> None:
    assert applied_age({}, 100.0) is None
    assert applied_age({"lastAppliedRevision": "r1", "lastAppliedAt": 40.0}, 100.0) == 60.0
    # Without lastAppliedAt: the last pass, when it attempted the applied revision.
    assert applied_age({"lastAppliedRevision": "r1", "lastAttemptedRevision": "r1",
                        "lastPassAt": 90.0}, 100.0) == 10.0
    assert applied_age({"lastAppliedRevision": "r1", "lastAttemptedRevision": "r2",
                        "lastPassAt": 90.0}, 100.0) is None


def test_no_database_yet_is_zeros_and_a_broken_one_leaves_the_gauges_out(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    m = Metrics(process=False)
    m.watch_fleet(tmp_path)
    s = scrape(m)
    assert value(s, "reconciler_hosts", desired_state="off", condition="Ready") == 0.0
    assert value(s, "reconciler_applied_revision_age_seconds") is None
    (tmp_path / "state.db").write_bytes(b"not a database" * 100)
    with caplog.at_level(logging.WARNING):
        s = scrape(m)
    assert value(s, "reconciler_paused") == 0.0
    assert not any(name == "reconciler_hosts" for name, _ in s)
    assert "cannot read" in caplog.text


def test_a_scrape_never_writes_the_database(tmp_path: Path) -> None:
    db = fill(tmp_path)
    db.close()
    (tmp_path / "state.db").chmod(0o400)
    m = Metrics(process=False)
    m.watch_fleet(tmp_path)
    assert value(scrape(m), "reconciler_hosts", desired_state="provisioned",
                 condition="Ready") == 2.0
    with pytest.raises(sqlite3.OperationalError):
        sqlite3.connect(f"{(tmp_path / 'state.db').as_uri()}?mode=ro", uri=True).execute(
            "DELETE FROM hosts")


# --- GET /metrics through the app ---------------------------------------------------------


def test_metrics_count_both_request_paths_by_route_not_path(tmp_path: Path) -> None:
    with fleet_app(tmp_path) as api:
        assert api.call("POST", "/api/v1/checkins/n1", json={"addresses": []}).status_code == 204
        for _ in range(3):  # the fast path (FastFront)
            api.call("PUT", "/api/v1/checkins/n1", json={"addresses": ["10.0.0.5"]})
        api.call("GET", "/api/v1/builds/" + "0" * 64)  # Flask, a templated route
        api.client.get("/no/such/path", environ_base={"REMOTE_ADDR": "127.0.0.1"})
        api.call("GET", "/healthz", client=UNTRUSTED)  # fast path, untrusted
        response = api.call("GET", "/metrics")
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        s = {(x.name, tuple(sorted(x.labels.items()))): x.value
             for f in text_string_to_metric_families(response.get_data(as_text=True))
             for x in f.samples}
    count = {lbl: v for (name, lbl), v in s.items() if name == "reconciler_http_requests_total"}

    def n(route: str, method: str, status: str) -> float | None:
        return count.get((("method", method), ("route", route), ("status", status)))

    assert n("checkins.update", "PUT", "204") == 3.0
    assert n("checkins.register", "POST", "204") == 1.0
    assert n("builds.get", "GET", "404") == 1.0
    assert n("unmatched", "GET", "404") == 1.0
    assert n("health.healthz", "GET", "200") == 1.0
    assert not any("0" * 64 in str(lbl) or "/no/such" in str(lbl) for lbl in count)
    assert s[("reconciler_checkins", (("state", "reported"),))] == 1.0
    assert s[("reconciler_build_queue_depth", ())] == 0.0
    assert s[("reconciler_paused", ())] == 0.0


def test_metrics_are_for_trusted_networks_only(tmp_path: Path) -> None:
    with fleet_app(tmp_path) as api:
        refused = api.call("GET", "/metrics", client=UNTRUSTED)
        assert refused.status_code == 403
        assert b"reconciler_" not in refused.get_data()


def test_serve_alone_shows_the_service_s_metrics_only(tmp_path: Path) -> None:
    with fleet_app(tmp_path, fleet=False) as api:
        text = api.call("GET", "/metrics").get_data(as_text=True)
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"reconciler_http_requests", "reconciler_build_queue_depth",
            "reconciler_checkins"} <= names
    assert not names & {"reconciler_hosts", "reconciler_paused", "reconciler_reconcile",
                        "reconciler_applied_revision_age_seconds"}


def test_openmetrics_when_the_scraper_asks(tmp_path: Path) -> None:
    with fleet_app(tmp_path) as api:
        response = api.client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"},
                                  headers={"Accept": "application/openmetrics-text; "
                                           "version=1.0.0"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).endswith("# EOF\n")
