"""Evidence against intent (issue 14, part 5): a server file that contradicts its inspection
report -- a MAC the server does not have, a disk serial or WWN not present, a disk smaller
than the image -- is a warning in ``validate`` and ``plan`` naming both values, and only
evidence complete enough to know contradicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli import main
from reconciler.model import desired_hosts, parse_inventory
from reconciler.model.desired import DesiredHost
from reconciler.model.evidence import contradictions
from reconciler.model.inspection import dump, hardware_section, merge, redfish_section
from reconciler.plan.inventory_diff import diff_inventories, to_record
from reconciler.plan.markdown import render_markdown
from tests.fixtures.inventory import files, server, write

HW = {
    "system": {}, "cpus": {"logical": 2}, "memory": {"totalBytes": 1 << 31},
    "disks": [{"name": "vda", "serial": "LABDISK0001", "wwn": None, "sizeBytes": 20 << 30},
              {"name": "sda", "serial": "QM00005", "wwn": "0x5000c500a1b2c3d4",
               "sizeBytes": 10 << 30}],
    "nics": [{"name": "enp1s0", "mac": "52:54:00:12:34:56", "link": True,
              "driver": "virtio_net"}],
}


def _report(name: str = "lab-host-01", *, hardware: Any = HW,
            redfish: Any = None) -> dict[str, Any]:
    return merge(None, name, hardware=hardware_section(hardware) if hardware else None,
                 redfish=redfish_section(redfish) if redfish is not None else None)


def _host(**overrides: Any) -> DesiredHost:
    inventory, problems = parse_inventory(files({"lab-host-01": server(1, **overrides)}))
    assert problems == []
    return desired_hosts(inventory)["lab-host-01"]


def _lines(host: DesiredHost, report: Any, **live: Any) -> list[str]:
    return [str(c) for c in contradictions(host, report, **live)]


def test_a_mac_the_server_does_not_have_names_both_values() -> None:
    assert _lines(_host(), _report()) == [
        "lab-host-01: interfaces[0].mac 52:54:00:18:00:01 is not on the server "
        "(inspection/lab-host-01.yaml: hardware nics 52:54:00:12:34:56)"]
    (c,) = contradictions(_host(), _report())
    assert (c.field, c.value) == ("interfaces[0].mac", "52:54:00:18:00:01")


def test_any_source_that_has_the_mac_confirms_it() -> None:
    rf = {"nics": [{"mac": "52:54:00:18:00:01", "name": "eth0"}]}
    assert _lines(_host(), _report(redfish=rf)) == []  # the BMC sees the NIC: stale in-band
    assert _lines(_host(), _report(), live_macs={"52:54:00:18:00:01"}) == []
    assert _lines(_host(), None, live_macs=["52:54:00:99:99:99"]) == [
        "lab-host-01: interfaces[0].mac 52:54:00:18:00:01 is not on the server "
        "(BMC now: nics 52:54:00:99:99:99)"]
    both = _lines(_host(), _report(redfish={"nics": [{"mac": "52:54:00:aa:aa:aa"}]}),
                  live_macs=["52:54:00:99:99:99"])
    assert both == [
        "lab-host-01: interfaces[0].mac 52:54:00:18:00:01 is not on the server "
        "(inspection/lab-host-01.yaml: hardware nics 52:54:00:12:34:56; redfish nics "
        "52:54:00:aa:aa:aa; BMC now: nics 52:54:00:99:99:99)"]


def test_no_evidence_proves_nothing() -> None:
    host = _host(disk={"serial": "MISSING"})
    assert contradictions(host, None) == []
    assert contradictions(host, {"server": "lab-host-01"}) == []
    assert contradictions(host, _report(hardware=None, redfish={})) == []
    assert contradictions(host, None, live_macs=[], live_drives=[]) == []
    # a BMC that lists drives without serials says nothing about a serial
    rf = {"drives": [{"name": "Drive 0", "size_bytes": 1 << 40}],
          "nics": [{"mac": "52:54:00:18:00:01"}]}
    assert contradictions(host, _report(hardware=None, redfish=rf)) == []


def test_a_disk_serial_or_wwn_not_present() -> None:
    host = _host(disk={"serial": "LABDISK0009"}, interfaces=None, state="inspected")
    assert _lines(host, _report()) == [
        "lab-host-01: disk.serial LABDISK0009 is not on the server "
        "(inspection/lab-host-01.yaml: hardware disks LABDISK0001, QM00005)"]
    assert _lines(_host(disk={"serial": "labdisk0001"}, interfaces=None, state="inspected"),
                  _report()) == []  # serials compare case-blind
    found = _host(disk={"wwn": "0x5000C500A1B2C3D4"}, interfaces=None, state="inspected")
    assert _lines(found, _report()) == []
    gone = _host(disk={"wwn": "0x5000c500a1b2c3ff"}, interfaces=None, state="inspected")
    assert _lines(gone, _report()) == [
        "lab-host-01: disk.wwn 0x5000c500a1b2c3ff is not on the server "
        "(inspection/lab-host-01.yaml: hardware disks LABDISK0001, QM00005)"]
    rf = {"drives": [{"serial_number": "S1", "size_bytes": 1 << 40}]}
    assert _lines(host, _report(hardware=None, redfish=rf)) == [
        "lab-host-01: disk.serial LABDISK0009 is not on the server "
        "(inspection/lab-host-01.yaml: redfish drives S1)"]
    assert _lines(host, None, live_drives=[{"serial_number": "LABDISK0009"}]) == []


def test_a_disk_smaller_than_the_image() -> None:
    host = _host(disk={"serial": "QM00005"}, interfaces=None, state="inspected")
    assert _lines(host, _report(), image_bytes=8 << 30) == []
    assert _lines(host, _report()) == []  # image size unknown: skipped
    assert _lines(host, _report(), image_bytes=12 << 30) == [
        "lab-host-01: disk.serial QM00005 is 10,737,418,240 bytes (10.0 GiB), smaller than "
        "the image (12,884,901,888 bytes (12.0 GiB)) (inspection/lab-host-01.yaml: hardware "
        "disks LABDISK0001, QM00005)"]


# --- validate and plan --------------------------------------------------------------------

WARNING = ("WARNING lab-host-01: interfaces[0].mac 52:54:00:18:00:01 is not on the server "
           "(inspection/lab-host-01.yaml: hardware nics 52:54:00:12:34:56)")


def _repo(tmp_path: Path, **reports: dict[str, Any]) -> Path:
    root = tmp_path / "inv"
    extra = {f"inspection/{name}.yaml": dump(doc) for name, doc in reports.items()}
    write(root, files({"lab-host-01": server(1)}, extra=extra))
    return root


def test_validate_prints_the_warning_and_keeps_exit_0(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _repo(tmp_path, **{"lab-host-01": _report(), "gone": _report("gone")})
    assert main(["validate", str(root)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "WARNING inspection/gone.yaml:18: server: no server 'gone' in servers/: this report "
        "describes nothing", WARNING]
    assert captured.err.strip() == "1 servers, 0 rejected, 0 problems, 2 warnings"
    assert main(["validate", str(root), "--format", "json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["problems"] == [] and record["warnings"][1] == WARNING


def test_validate_without_reports_prints_no_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _repo(tmp_path)
    assert main(["validate", str(root)]) == 0
    assert capsys.readouterr().out == ""


def test_plan_warns_in_the_pull_request() -> None:
    extra = {"inspection/lab-host-01.yaml": dump(_report())}
    base, _ = parse_inventory(files({"lab-host-01": server(1)}))
    head, problems = parse_inventory(files({"lab-host-01": server(1)}, extra=extra))
    plan = diff_inventories(base, head, problems=problems)
    assert to_record(plan)["warnings"] == [WARNING]
    assert plan.hosts == () and problems == []  # a report changes no desired state
    markdown = render_markdown(plan)
    assert "### Warnings (1)" in markdown and WARNING in markdown
    # fixed in the same pull request: no warning
    fixed = server(1, interfaces=[{"mac": "52:54:00:12:34:56", "subnet": "lab",
                                   "address": "auto"}])
    head, problems = parse_inventory(files({"lab-host-01": fixed}, extra=extra))
    assert to_record(diff_inventories(base, head, problems=problems))["warnings"] == []
