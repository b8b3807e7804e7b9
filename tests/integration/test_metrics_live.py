"""GET /metrics of the real service (``reconciler.web.services.start``, cheroot on a loopback
port) with a fleet in every condition, checked by Prometheus' own ``promtool check metrics``;
every metric docs/operations.md lists is in the scrape. And ``reconciler serve`` alone: its
service metrics pass promtool too."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from reconciler.adapters.statedb import StateDB
from reconciler.engine import brake
from reconciler.engine.metrics import Metrics
from reconciler.plan import conditions
from reconciler.plan.status import HostStatus
from reconciler.settings import load_settings
from reconciler.web.fleet import FleetLink
from reconciler.web.services import start
from tests.conftest import skip_or_fail
from tests.fixtures.service import free_port

pytestmark = pytest.mark.integration

# The metrics issue 15 names, as families (a counter's family drops its _total).
ENGINE = {
    "reconciler_reconcile": "counter",
    "reconciler_reconcile_errors": "counter",
    "reconciler_step_duration_seconds": "histogram",
    "reconciler_steps": "counter",
    "reconciler_state_transitions": "counter",
    "reconciler_git_fetch_failures": "counter",
    "reconciler_hosts": "gauge",
    "reconciler_applied_revision_age_seconds": "gauge",
    "reconciler_paused": "gauge",
}
SERVICE = {
    "reconciler_http_requests": "counter",
    "reconciler_build_queue_depth": "gauge",
    "reconciler_checkins": "gauge",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        skip_or_fail("promtool missing (Debian package prometheus, scripts/debian-packages.txt)")
    return found


@contextlib.contextmanager
def service(tmp_path: Path, link: FleetLink | None) -> Iterator[str]:
    (tmp_path / "images").mkdir(exist_ok=True)
    port = free_port()
    settings = load_settings(None, {}, {
        "listen": f"127.0.0.1:{port}", "data_dir": str(tmp_path / "service"),
        "images": str(tmp_path / "images"), "public_url": f"http://127.0.0.1:{port}",
        "trusted": ["127.0.0.0/8"], "shutdown_timeout": "5",
    })  # fmt: skip
    stop = start(settings, link)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop()


def check(text: str) -> dict[str, str]:
    """promtool's verdict on ``text`` (must be clean), then the families and their types."""
    result = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip() and \
        not result.stderr.strip(), result.stdout + result.stderr
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def fleet_in_every_condition(data_dir: Path) -> None:
    db = StateDB(data_dir / "state.db")
    db.put_many({
        "ready": conditions.ready(HostStatus("ready", desired_state="provisioned"), "ok"),
        "busy": conditions.progressing(HostStatus("busy", desired_state="provisioned"),
                                       "provision: write-image"),
        "stuck": conditions.stalled(HostStatus("stuck", desired_state="off"),
                                    "PowerOffFailed", "BMC refused"),
        "held": conditions.idle(HostStatus("held", desired_state="off"), "Suspended", "-"),
        "left": conditions.idle(HostStatus("left", desired_state="unmanaged"), "Unmanaged", "-"),
    })
    db.set_fleet(lastAppliedRevision="main@sha1:" + "a" * 40,
                 lastAttemptedRevision="main@sha1:" + "a" * 40, lastPassAt=1.0)
    db.close()


def test_a_live_scrape_passes_promtool_and_names_every_metric(tmp_path: Path) -> None:
    promtool()
    data_dir = tmp_path / "loop"
    fleet_in_every_condition(data_dir)
    brake.pause(data_dir, "cli:test", "checking the metrics")
    metrics = Metrics()
    # What the engine reports as it works.
    metrics.reconciled("success")
    metrics.error("bmc")
    metrics.step_finished("provision", "write-image", 312.5, "ok")
    metrics.transition("off", "provisioned")
    metrics.fetch_failed()
    link = FleetLink(data_dir, "main", wake=lambda: None, metrics=metrics)
    with service(tmp_path, link) as url:
        requests.post(f"{url}/api/v1/checkins/n1", json={"addresses": []}, timeout=10)
        requests.put(f"{url}/api/v1/checkins/n1", json={"addresses": ["10.0.0.5"]}, timeout=10)
        response = requests.get(f"{url}/metrics", timeout=10)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        families = check(response.text)
    for name, kind in {**ENGINE, **SERVICE}.items():
        assert families.get(name) == kind, (name, sorted(families))
    assert "process_cpu_seconds" in families
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(response.text) for s in f.samples}
    assert samples[("reconciler_paused", ())] == 1.0
    assert samples[("reconciler_hosts", (("condition", "Stalled"), ("desired_state", "off")))] \
        == 1.0
    assert samples[("reconciler_http_requests_total", (
        ("method", "PUT"), ("route", "checkins.update"), ("status", "204")))] == 1.0


def test_serve_alone_passes_promtool_with_its_service_metrics(tmp_path: Path) -> None:
    promtool()
    with service(tmp_path, None) as url:
        requests.get(f"{url}/healthz", timeout=10)
        text = requests.get(f"{url}/metrics", timeout=10).text
    families = check(text)
    for name, kind in SERVICE.items():
        assert families.get(name) == kind
    assert not set(ENGINE) & set(families)
