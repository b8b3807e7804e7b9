"""The status page and the fleet API (reconciler/web/status.py) through Flask's test client,
every answer checked against schemas/openapi.yaml: escaping of a hostile inventory, filters,
404s, the ACL and ``status_public``, no secret in any output, and the JSON is the record
``reconciler status --json`` prints."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.statedb import StateDB
from reconciler.commands import run
from reconciler.engine import brake, statusview
from reconciler.errors import InputError
from reconciler.plan import conditions
from reconciler.plan.status import HostStatus
from reconciler.settings import load_settings
from reconciler.web import status
from tests.fixtures.fleet_app import UNTRUSTED, FleetApi, fleet_app

REV1, REV2 = "main@sha1:" + "1" * 40, "main@sha1:" + "2" * 40
EVIL = "<script>alert(1)</script>"
# A server's name is its file's name: anything but a slash.
NAME = "<img src=x onerror=alert(1)>"
NAME_PATH = "/hosts/%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E"
SUBJECT = f"servers: {EVIL} & <img src=x onerror=alert(2)>"
SECRET = "hunter2-s3cret"
PAGES = ("/status", "/hosts/ready-1", "/api/v1/hosts", "/api/v1/hosts/ready-1",
         "/api/v1/revision")


def populate(data_dir: Path, now: float = 1_800_000_000.0) -> None:
    """A fleet in every condition, written as the engine writes it."""
    db = StateDB(data_dir / "state.db")
    applied = {"applied_state": "provisioned", "last_applied_revision": REV2,
               "last_attempted_revision": REV2}
    db.put_many({
        "ready-1": conditions.ready(HostStatus("ready-1", desired_state="provisioned",
                                               **applied), "provisioned: up to date"),
        "old-1": conditions.ready(HostStatus("old-1", desired_state="provisioned",
                                             applied_state="provisioned",
                                             last_applied_revision=REV1), "up to date"),
        NAME: conditions.stalled(HostStatus(NAME, desired_state="off"), "PowerOffFailed",
                                 f"BMC said {EVIL}"),
        "gone-1": conditions.idle(HostStatus("gone-1", desired_state="off", orphaned=True),
                                  "Orphaned", "removed from the inventory"),
        "bad-1": conditions.ready(HostStatus("bad-1", desired_state="off", applied_state="off",
                                             last_applied_revision=REV2,
                                             invalid=f"servers/bad-1.yaml:1: state: {EVIL}"),
                                  "off: up to date"),
        "free-1": conditions.idle(HostStatus("free-1", desired_state="unmanaged"),
                                  "Unmanaged", "never touched"),
    })
    writing = HostStatus(
        "busy-1", desired_state="provisioned", workflow="provision", step="write-image",
        step_started=now - 250, observe_error="http://198.18.0.1:8000: timed out",
        progress={"written_bytes": 630 << 20, "image_bytes": 1000 << 20,
                  "iso_url": f"http://admin:{SECRET}@198.18.0.1/boot.iso",
                  "address": "198.18.0.150", "hardware": {"serial": SECRET}})
    for step, seconds in (("build", 12.5), ("check-bmc", 0.4), ("find-disk", 3.0)):
        run_id = db.begin_step(writing.replace(workflow="provision", step=step), now - 300)
        db.end_step(run_id, writing, now - 300 + seconds, "ok", f"{step} done")
    db.begin_step(conditions.progressing(writing, "provision: write-image"), now - 250)
    db.set_fleet(lastFetched=REV2, lastFetchedAt=now - 5, lastFetchedSubject=SUBJECT,
                 lastAttemptedRevision=REV2, lastAppliedRevision=REV1, lastPassAt=now - 5,
                 lastFetchError=f"git fetch of https://git.example/inv.git: {EVIL}",
                 lastFetchErrorAt=now - 60)
    db.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FleetApi]:
    with fleet_app(tmp_path) as made:
        populate(made.data_dir)
        yield made


def body(api: FleetApi, path: str, status: int = 200, **kw: Any) -> str:
    response = api.call("GET", path, **kw)
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_data(as_text=True)


def rows(html: str) -> list[str]:
    """The server names of the page's rows, in order (unescaped)."""
    import html as html_module

    return [html_module.unescape(n) for n in re.findall(r'<tr data-host="([^"]*)"', html)]


# --- escaping and secrets -------------------------------------------------------------------


def test_a_hostile_name_message_subject_and_reason_are_escaped(api: FleetApi) -> None:
    brake.pause(api.data_dir, "cli:ops", f"stop {EVIL}")
    for path in ("/status", "/status?condition=Stalled", NAME_PATH, "/hosts/bad-1"):
        response = api.call("GET", path)
        html = response.get_data(as_text=True)
        assert "<script" not in html and "<img" not in html, path
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    html = body(api, "/status")
    assert ">&lt;img src=x onerror=alert(1)&gt;</a>" in html  # the name
    assert "BMC said &lt;script&gt;alert(1)&lt;/script&gt;" in html  # a message
    assert "servers: &lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;img src=x" in html
    assert "stop &lt;script&gt;" in html and "state: &lt;script&gt;" in html
    # The link to the hostile server's page is its name, quoted as one path segment.
    assert f'href="{NAME_PATH}"' in html


def test_the_hostile_server_has_its_page(api: FleetApi) -> None:
    html = body(api, NAME_PATH)
    assert "BMC said &lt;script&gt;" in html and "PowerOffFailed" in html
    assert json.loads(body(api, "/api/v1" + NAME_PATH))["name"] == NAME


def test_no_secret_url_address_or_hardware_in_any_output(api: FleetApi) -> None:
    for path in (*PAGES, "/hosts/busy-1", "/api/v1/hosts/busy-1"):
        text = body(api, path)
        assert SECRET not in text and "boot.iso" not in text and "198.18.0.150" not in text
    record = statusview.status_record(api.data_dir, "busy-1")
    assert set(record["hosts"][0]["progress"]) == {"written_bytes", "image_bytes"}


def test_pages_are_read_only(api: FleetApi) -> None:
    for path in ("/status", "/hosts/busy-1"):
        html = body(api, path)
        assert not re.search(r"<(form|button|input|script)\b", html)
    response = api.client.post("/status", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert response.status_code == 405 and response.json is not None


# --- what the page shows --------------------------------------------------------------------


def test_the_page_shows_revision_counts_and_a_row_per_server(api: FleetApi) -> None:
    html = body(api, "/status")
    assert '<meta http-equiv="refresh" content="10">' in html
    assert "222222222222" in html and "last fetch failed" in html
    counts = statusview.status_record(api.data_dir)["counts"]
    assert counts["health"] == {"Ready": 3, "Reconciling": 1, "Stalled": 1, "Unknown": 2}
    assert counts["sync"] == {"Synced": 2, "OutOfSync": 3, "Unmanaged": 2}
    assert (counts["orphaned"], counts["invalid"], counts["total"]) == (1, 1, 7)
    for name, n in {**counts["health"], **counts["sync"], "orphaned": 1, "invalid": 1}.items():
        assert f'id="count-{name}">{n}</span>' in html
    # Worst first, then by name.
    assert rows(html) == [NAME, "busy-1", "bad-1", "free-1", "gone-1", "old-1", "ready-1"]
    assert "writing image 63 %" in html and "4 min 10 s" not in html  # time is the wall's


def test_progress_and_time_in_step() -> None:
    row = {"step": "write-image", "progress": {"written_bytes": 630 << 20,
                                                "image_bytes": 1000 << 20}}
    assert statusview.progress_text(row) == "writing image 63 %"
    row["progress"] = {"written_bytes": 1536 << 20}
    assert statusview.progress_text(row) == "writing image: 1536 MiB written"
    assert statusview.progress_text({"step": "seed", "progress": row["progress"]}) == ""
    assert statusview.progress_text({"step": "write-image", "progress": {}}) == ""
    assert [status.duration(s) for s in (None, 0.4, 42, 250, 3 * 3600 + 300, 2 * 86400)] == [
        "-", "0.4 s", "42 s", "4 min 10 s", "3 h 05 min", "2 d 00 h"]
    assert status.short_revision(REV2) == "2" * 12 and status.short_revision(None) == "-"


def test_the_pause_banner(api: FleetApi) -> None:
    assert 'id="paused"' not in body(api, "/status")
    brake.pause(api.data_dir, "api:10.0.0.9", "disk firmware", now=1_800_000_000)
    html = body(api, "/status")
    assert "PAUSED" in html and "api:10.0.0.9" in html and "disk firmware" in html
    assert "2027-01-15 08:00:00 UTC" in html


def test_refresh_can_be_turned_off_and_links_keep_it_off(api: FleetApi) -> None:
    html = body(api, "/status?refresh=0&condition=Ready")
    assert 'http-equiv="refresh"' not in html
    assert 'href="/status?condition=Stalled&amp;refresh=0"' in html
    assert 'href="/hosts/ready-1?refresh=0"' in html
    assert 'href="/status?condition=Ready">refresh every 10 s' in html  # the toggle
    assert 'href="/status?refresh=0">stop' in body(api, "/status")


def test_root_redirects_to_the_page_with_its_filters(api: FleetApi) -> None:
    response = api.client.get("/?condition=Stalled&refresh=0&junk=1",
                              environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/status?condition=Stalled&refresh=0"


def test_the_server_page_has_conditions_history_and_step_durations(api: FleetApi) -> None:
    html = body(api, "/hosts/busy-1?refresh=0")
    assert "writing image 63 %" in html and "timed out" in html  # the BMC error
    history = html[html.index('id="history"'):]
    assert history.index("write-image") < history.index("find-disk") < history.index("build")
    assert "12 s" in history and "0.4 s" in history and "running" in history
    assert 'id="last-operation"' in html and "provision, running" in html


# --- filters, 404s, access ------------------------------------------------------------------


@pytest.mark.parametrize(("query", "names"), [
    ("condition=Stalled", [NAME]),
    ("condition=Reconciling", ["busy-1"]),
    ("condition=Unknown", ["free-1", "gone-1"]),
    ("condition=orphaned", ["gone-1"]),
    ("condition=invalid", ["bad-1"]),
    ("sync=Synced", ["bad-1", "ready-1"]),
    ("condition=Ready&sync=OutOfSync", ["old-1"]),
])
def test_filters(api: FleetApi, query: str, names: list[str]) -> None:
    listed = json.loads(body(api, f"/api/v1/hosts?{query}"))
    assert [h["name"] for h in listed["hosts"]] == sorted(names)
    assert listed["counts"]["total"] == 7  # the fleet's, not the filter's
    assert sorted(rows(body(api, f"/status?{query}"))) == sorted(names)


@pytest.mark.parametrize("query", ["condition=stalled", "condition=", "sync=Ready"])
def test_a_bad_filter_is_400_naming_the_parameter(api: FleetApi, query: str) -> None:
    for path in ("/api/v1/hosts", "/status"):
        response = api.call("GET", f"{path}?{query}")
        assert response.status_code == 400
        assert response.json["message"].startswith(query.split("=")[0] + ": ")  # type: ignore[index]


def test_an_unknown_server_is_404(api: FleetApi) -> None:
    response = api.call("GET", "/api/v1/hosts/nope")
    assert response.status_code == 404
    assert response.json == {"message": "name: no server 'nope' in the reconciler's state"}
    html = body(api, "/hosts/nope", 404)
    assert "No server <code>nope</code>" in html


def test_without_a_loop_every_route_is_404_with_an_error_body(tmp_path: Path) -> None:
    with fleet_app(tmp_path, fleet=False) as plain:
        for path in PAGES:
            response = plain.call("GET", path)
            assert response.status_code == 404 and "reconcile loop" in response.json["message"]


def test_no_state_database_yet_is_an_empty_fleet(tmp_path: Path) -> None:
    with fleet_app(tmp_path) as fresh:
        listed = json.loads(body(fresh, "/api/v1/hosts"))
        assert listed["hosts"] == [] and listed["counts"]["total"] == 0
        assert "0 of 0 servers" in body(fresh, "/status")
        assert json.loads(body(fresh, "/api/v1/revision"))["lastFetched"] is None
        assert fresh.call("GET", "/api/v1/hosts/x").status_code == 404


def test_untrusted_clients_get_403_unless_status_public(tmp_path: Path) -> None:
    with fleet_app(tmp_path) as closed:
        populate(closed.data_dir)
        for path in (*PAGES, "/"):
            response = closed.client.get(path, environ_base={"REMOTE_ADDR": UNTRUSTED})
            assert response.status_code == 403 and "may not GET" in response.json["message"]
    with fleet_app(tmp_path, status_public="true") as public:
        for path in PAGES:
            assert public.call("GET", path, client=UNTRUSTED).status_code == 200
            head = public.client.head(path, environ_base={"REMOTE_ADDR": UNTRUSTED})
            assert head.status_code == 200
        # Only the status routes open up: the rest stays trusted-only, writes included.
        assert public.call("GET", "/api/v1/builds", client=UNTRUSTED).status_code == 403
        assert public.call("POST", "/api/v1/pause", client=UNTRUSTED).status_code == 403


def test_status_public_setting() -> None:
    assert load_settings(None, {}, {}).status_public is False
    assert load_settings(None, {"RECONCILER_STATUS_PUBLIC": "yes"}, {}).status_public is True
    with pytest.raises(InputError, match="RECONCILER_STATUS_PUBLIC: 'maybe' is not a boolean"):
        load_settings(None, {"RECONCILER_STATUS_PUBLIC": "maybe"}, {})


# --- one record for the CLI and the API -----------------------------------------------------


def test_the_json_is_the_record_reconciler_status_prints(api: FleetApi) -> None:
    assert run.status_record is statusview.status_record  # `reconciler status --json`
    brake.pause(api.data_dir, "cli:ops", "checking")
    assert json.loads(body(api, "/api/v1/hosts")) == statusview.status_record(api.data_dir)
    assert json.loads(body(api, "/api/v1/hosts?condition=Stalled")) == \
        statusview.status_record(api.data_dir, condition="Stalled")
    one = json.loads(body(api, "/api/v1/hosts/busy-1"))
    assert one == statusview.status_record(api.data_dir, "busy-1")["hosts"][0]
    assert [h["step"] for h in one["history"]] == ["build", "check-bmc", "find-disk",
                                                   "write-image"]
    revision = json.loads(body(api, "/api/v1/revision"))
    record = statusview.status_record(api.data_dir)
    assert revision == {**record["revision"], "paused": True, "pause": record["paused"]}
    assert revision["lastFetchedSubject"] == SUBJECT  # JSON is not HTML: as committed


def test_the_cli_prints_the_same_record(api: FleetApi, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    args = argparse.Namespace(data_dir=api.data_dir, server=None, json=True, wait=False)
    assert run.status_handler(args) == 0  # `reconciler status --json` (cli.main sets logging)
    assert json.loads(capsys.readouterr().out) == json.loads(body(api, "/api/v1/hosts"))
