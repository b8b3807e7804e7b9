"""Inspection through the loop, against a real git remote and the fake world: ``state:
inspected`` runs the inspect workflow, its report and the BMC's out-of-band inventory are
committed back as ``inspection/<server>.yaml`` (one commit a pass, none when nothing changed),
a provisioning that contradicts the committed evidence is refused, and the brake stops both."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.adapters.run import run
from reconciler.engine import brake
from reconciler.engine.reports import Reports
from reconciler.engine.writeback import ReportWriter
from reconciler.lab.gitops import GIT_IDENTITY
from reconciler.plan.status import HostStatus
from tests.fixtures.inventory import server
from tests.unit.test_loop import Fleet


class Inspecting(Fleet):
    def __init__(self, tmp_path: Path, docs: dict[str, Any]) -> None:
        super().__init__(tmp_path, docs)
        self.writer = ReportWriter(str(self.remote.bare), "main", "", tmp_path / "writeback",
                                   instance="test", host="test-host")
        self.reports = Reports(self.executor, self.writer, oob_interval=3600,
                               clock=self.lab.clock)
        self.reconciler.reports = self.reports
        self.tmp = tmp_path

    def push(self, docs: dict[str, Any]) -> str:
        """Push server files the way a person does: on top of the reconciler's commits."""
        if self.git("for-each-ref", "refs/heads/main"):
            run(["git", "pull", "-q", "--ff-only", "origin", "main"], timeout=30,
                cwd=self.remote.work, env=GIT_IDENTITY)
        return self.remote.push(docs)

    def settle(self, n: int = 3) -> None:
        async def go() -> None:
            for _ in range(n):
                await self.reconciler.tick()
                await self.executor.wait_idle()
                await self.reports.settle()

        asyncio.run(go())

    def git(self, *argv: str) -> str:
        return run(["git", *argv], timeout=30, cwd=self.remote.bare).stdout.decode().strip()

    def head(self) -> str:
        return self.git("rev-parse", "main")

    def report(self, name: str) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(self.git("show", f"main:inspection/{name}.yaml"))
        return loaded


@pytest.fixture
def fleet(tmp_path: Path) -> Any:
    made = Inspecting(tmp_path, {"n1": server(1, state="inspected")})
    yield made
    made.db.close()


def test_an_inspected_server_gets_its_report_committed_once(fleet: Inspecting) -> None:
    fleet.push({"n1": server(1, state="inspected")})
    before = int(fleet.git("rev-list", "--count", "main"))
    fleet.settle(3)
    st = fleet.db.hosts()["n1"]
    assert st.applied_state == "inspected", st.conditions
    assert fleet.lab.world.os == "off" and fleet.lab.world.disk_image is None
    report = fleet.report("n1")
    assert report["server"] == "n1"
    disks = report["hardware"]["disks"]
    assert [d.get("serial") for d in disks] == ["LABDISK0001"]
    assert [n["mac"] for n in report["hardware"]["nics"]] == ["52:54:00:18:00:01"]
    assert "52:54:00:18:00:01" in [n["mac"] for n in report["redfish"]["nics"]]
    text = fleet.git("show", "main:inspection/n1.yaml")
    assert "2026" not in text and "temperature" not in text.lower()
    commits = int(fleet.git("rev-list", "--count", "main")) - before
    assert 1 <= commits <= 2  # the out-of-band section may land a pass before the in-band one
    message = fleet.git("log", "-1", "--format=%B", "main")
    assert "n1" in message
    # More passes, a re-read of the BMC: the same hardware makes no commit.
    head = fleet.head()
    fleet.reports.oob.clear()
    fleet.settle(3)
    assert fleet.head() == head
    # Its own commit does not make the server do anything again.
    assert fleet.db.hosts()["n1"].applied_target == st.applied_target
    assert fleet.db.hosts()["n1"].workflow is None


def test_a_provisioning_that_contradicts_the_report_is_refused(fleet: Inspecting) -> None:
    fleet.push({"n1": server(1, state="inspected")})
    fleet.settle(3)
    assert fleet.report("n1")["hardware"]["disks"][0]["serial"] == "LABDISK0001"
    # The reviewer's file names a disk the inspection did not find on this server.
    fleet.lab.world.calls.clear()
    fleet.push({"n1": server(1, disk={"serial": "NOTHERE01"})})
    fleet.settle(2)
    st = fleet.db.hosts()["n1"]
    stalled = st.condition("Stalled")
    assert stalled is not None and stalled.reason == "EvidenceContradicts", st.conditions
    assert "NOTHERE01" in stalled.message and "LABDISK0001" in stalled.message
    mutations = [c for c, _ in fleet.lab.world.calls if c not in ("power_state", "nic_macs",
                                                                  "oob_inventory", "inventory")]
    assert mutations == []  # refused before any power or media action
    assert fleet.lab.world.disk_image is None


def test_the_brake_stops_inspection_and_commits(fleet: Inspecting) -> None:
    fleet.push({"n1": server(1, state="inspected")})
    head = fleet.head()
    brake.pause(fleet.tmp, "test", "hold everything")
    fleet.reconciler.paused = brake.Brake(fleet.tmp)
    fleet.settle(2)
    assert fleet.head() == head
    assert (fleet.db.hosts().get("n1") or HostStatus("n1")).workflow is None
    assert fleet.lab.world.os == "off"
    assert [c for c, _ in fleet.lab.world.calls if c not in (
        "power_state", "oob_inventory")] == []
    brake.resume(fleet.tmp)
    fleet.settle(3)
    assert fleet.head() != head
    assert fleet.db.hosts()["n1"].applied_state == "inspected"
