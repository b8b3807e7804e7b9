"""The executor and the loop on fakes with the real interfaces: FakeBmc (recorded Redfish JSON),
a build client answering like the service, and an SSH "server" that is what the FakeBmc booted.

The fake world: the FakeBmc's calls move the server between "off", "ephemeral" (booted from the
inserted CD) and "installed" (booted from the disk the image was written to); a connection
succeeds only to the OS that runs, and only with that OS's pinned host key. Integration tests
prove the same flows against the sushy-tools emulator, OVMF VMs and real SSH.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from reconciler.adapters.redfish.errors import BmcUnreachable
from reconciler.adapters.redfish.fake import FakeBmc
from reconciler.adapters.statedb import StateDB
from reconciler.engine.executor import Executor, Limits
from reconciler.model import parse_inventory
from reconciler.model.desired import desired_hosts
from reconciler.model.policy import Policy
from reconciler.plan.decide import Kind, plan
from reconciler.plan.status import HostStatus
from tests.fixtures.engine import SHA, FakeBuilds, Lab, Shell, World
from tests.fixtures.inventory import files, server


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    made = Lab(tmp_path)
    yield made
    made.db.close()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def bmc_calls(world: World) -> list[str]:
    return [name for name, _ in world.calls if name not in ("power_state", "nic_macs")]


def test_provisioning_runs_the_seed_sequence_to_ready(lab: Lab) -> None:
    action = run(lab.reconcile())
    assert action.kind == Kind.START and action.workflow == "provision"
    st = lab.db.hosts()["n1"]
    assert st.condition("Ready").status == "True", st.conditions  # type: ignore[union-attr]
    assert st.applied_state == "provisioned" and st.workflow is None
    assert st.applied_provision == lab.host.digests.provision
    assert st.last_applied_revision == "r1"
    # The seed's Redfish order: off, eject, insert, boot Cd once, on ... eject, Hdd, cycle.
    assert bmc_calls(lab.world) == [
        "request_off", "eject_all_media", "insert_cd", "set_boot", "power_on",
        "eject_all_media", "set_boot", "power_cycle"]
    assert lab.world.os == "installed" and lab.world.disk_image == SHA
    steps = [h.step for h in lab.db.history("n1")]
    assert steps[0] == "build" and steps[-1] == "ssh-installed" and "write-image" in steps
    # Nothing left to do on the next pass.
    again = run(lab.reconcile())
    assert again.kind == Kind.NONE and again.runnable is False


def test_host_keys_are_pinned_and_baked_into_the_image(lab: Lab) -> None:
    run(lab.reconcile())
    (request,) = lab.builds.requests.values()
    user_data = next(f for f in request["files"] if f["path"].endswith("/user-data"))
    import base64

    text = base64.b64decode(user_data["contentBase64"]).decode()
    target = lab.db.hosts()["n1"].applied_target or ""
    eph = lab.db.host_key("n1", "ephemeral", target)
    assert eph is not None and eph[1] in text and "ed25519_private" in text
    installed = lab.db.host_key("n1", "installed", target)
    assert installed is not None and installed[1] not in text  # only on the disk's seed


def test_a_crash_resumes_at_the_steps_restart_point(lab: Lab, tmp_path: Path) -> None:
    async def crash_during_write() -> None:
        desired = lab.host
        lab.world.hold_convert = asyncio.Event()
        (action,) = plan({"n1": desired}, {}, {}, Policy(), lab.clock())
        lab.executor.start(desired, action, "r1")
        while not any("qemu-img convert" in c for s in lab.shells for c in s.commands):
            await asyncio.sleep(0)
        for task in list(lab.executor.tasks.values()):
            task.cancel()  # what kill -9 leaves: the step committed, its end never written
        await asyncio.gather(*lab.executor.tasks.values(), return_exceptions=True)

    run(crash_during_write())
    lab.world.hold_convert = None
    st = lab.db.hosts()["n1"]
    assert st.workflow == "provision" and st.step == "write-image"
    lab.executor = lab.make_executor()
    action = run(lab.reconcile())
    assert action.kind == Kind.CONTINUE and action.step == "ssh-ephemeral"
    st = lab.db.hosts()["n1"]
    assert st.condition("Ready").status == "True"  # type: ignore[union-attr]
    results = [(h.step, h.result) for h in lab.db.history("n1")]
    assert ("write-image", "interrupted") in results
    assert results[-1] == ("ssh-installed", "ok")
    after = results[results.index(("write-image", "interrupted")) + 1:]
    assert [s for s, _ in after[:3]] == ["ssh-ephemeral", "find-disk", "write-image"]


def test_a_finished_server_is_never_wiped_again(lab: Lab) -> None:
    run(lab.reconcile())
    writes = sum("qemu-img convert" in c for s in lab.shells for c in s.commands)
    for _ in range(3):
        run(lab.reconcile())
    assert sum("qemu-img convert" in c for s in lab.shells for c in s.commands) == writes == 1


def test_temporary_errors_back_off_then_stall_on_the_budget(lab: Lab) -> None:
    lab.world.fail_next("insert_cd", BmcUnreachable("BMC fake: insert: unreachable"))
    run(lab.reconcile())
    st = lab.db.hosts()["n1"]
    assert st.attempts == 1 and st.next_retry is not None and st.workflow == "provision"
    reconciling = st.condition("Reconciling")
    assert reconciling is not None and reconciling.reason == "ProgressingWithRetry"
    # Inside the backoff window nothing happens; after it, the workflow resumes and finishes.
    assert run(lab.reconcile()).hold is not None
    lab.clock.now = st.next_retry + 1
    assert run(lab.reconcile()).kind == Kind.CONTINUE
    assert lab.db.hosts()["n1"].condition("Ready").status == "True"  # type: ignore[union-attr]


def test_the_retry_budget_ends_in_stalled(tmp_path: Path) -> None:
    lab = Lab(tmp_path, limits=Limits(max_attempts=2, backoff_base=1))
    for _ in range(5):
        lab.world.fail_next("insert_cd", BmcUnreachable("BMC fake: insert: unreachable"))
    run(lab.reconcile())
    lab.clock.now = (lab.db.hosts()["n1"].next_retry or 0) + 1
    run(lab.reconcile())
    st = lab.db.hosts()["n1"]
    stalled = st.condition("Stalled")
    assert stalled is not None and stalled.reason == "RetriesExhausted"
    assert "gave up after 2 attempts" in stalled.message
    before = len(lab.world.calls)
    lab.clock.now += 10_000
    action = run(lab.reconcile())
    assert not action.runnable and len(
        [c for c in lab.world.calls[before:] if c[0] != "power_state"]) == 0


def test_wrong_machine_guard_stalls_before_any_power_action(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    lab.world.docs["nics"] = [{**lab.world.docs["nics"][0], "MACAddress": "52:54:00:99:99:99",
                              "PermanentMACAddress": "52:54:00:99:99:99"}]
    run(lab.reconcile())
    st = lab.db.hosts()["n1"]
    stalled = st.condition("Stalled")
    assert stalled is not None and stalled.reason == "WrongMachine"
    assert "52:54:00:99:99:99" in stalled.message and "52:54:00:18:00:01" in stalled.message
    assert bmc_calls(lab.world) == []


def test_wrong_instance_id_stalls_before_the_disk_write(lab: Lab) -> None:
    original = lab.connect

    async def other_machine(*args: Any, **kwargs: Any) -> Shell:
        shell = await original(*args, **kwargs)
        shell.instance_id = "someone-else"
        return shell

    lab.executor.connect = other_machine
    run(lab.reconcile())
    stalled = lab.db.hosts()["n1"].condition("Stalled")
    assert stalled is not None and stalled.reason == "WrongMachine"
    assert "someone-else" in stalled.message
    assert lab.world.disk_image is None


def test_protected_server_gets_no_bmc_call(tmp_path: Path) -> None:
    lab = Lab(tmp_path, doc=server(1, protected=True))
    action = run(lab.reconcile())
    assert action.hold is not None and action.hold.value == "Protected"
    assert bmc_calls(lab.world) == []


def test_off_powers_off_gracefully_then_forced(tmp_path: Path) -> None:
    lab = Lab(tmp_path, doc=server(1, state="off"))
    lab.world.system["PowerState"] = "On"
    lab.world.system["ignores_graceful"] = True
    run(lab.reconcile())
    st = lab.db.hosts()["n1"]
    assert st.applied_state == "off" and lab.world.system["PowerState"] == "Off"
    forced = [args for name, args in lab.world.calls if name == "request_off"]
    assert forced == [(False,), (True,)]


def test_a_dead_bmc_does_not_slow_the_others(tmp_path: Path) -> None:
    """Ten servers, one BMC never answers until released: the nine others are all asked
    meanwhile (with the dead one holding its call), so one dead BMC delays nobody."""
    import threading

    docs = {f"n{i}": server(i, state="off") for i in range(1, 11)}
    inv, _ = parse_inventory(files(docs))
    hosts = desired_hosts(inv)
    release = threading.Event()
    asked: dict[str, threading.Event] = {n: threading.Event() for n in hosts if n != "n1"}

    class Dead(FakeBmc):
        def power_state(self) -> Any:
            release.wait(30)
            raise BmcUnreachable("BMC dead: power state: no answer")

    class Live(FakeBmc):
        def __init__(self, name: str) -> None:
            super().__init__(FakeBmc.from_recording().docs, name=name)

        def power_state(self) -> Any:
            asked[self.name].set()
            return super().power_state()

    bmcs: dict[str, FakeBmc] = {n: Live(n) for n in asked}
    bmcs["n1"] = Dead(FakeBmc.from_recording().docs)
    db = StateDB(tmp_path / "state.db")
    executor = Executor(db, bmc_factory=lambda h: bmcs[h.name], build=FakeBuilds(),  # type: ignore[arg-type]
                        render=lambda h, k, p, i: None,  # type: ignore[arg-type,return-value]
                        client_key=asyncssh.generate_private_key("ssh-ed25519"))

    async def go() -> dict[str, Any]:
        everyone = asyncio.create_task(executor.observe(hosts))
        all_asked = await asyncio.to_thread(
            lambda: all(e.wait(10) for e in asked.values()))
        assert all_asked, "a live BMC was not asked while the dead one hung"
        assert not everyone.done()  # the dead one is still hanging
        release.set()
        found = await everyone
        await executor.stop()
        return found

    found = asyncio.run(go())
    assert found["n1"].error and "no answer" in found["n1"].error
    assert all(found[n].error is None for n in asked)
    db.close()


def test_state_records_round_trip(lab: Lab) -> None:
    run(lab.reconcile())
    st = lab.db.hosts()["n1"]
    assert HostStatus.from_record(st.to_record()) == st


def test_inspection_boots_checks_in_reads_the_hardware_and_leaves_it_off(
        tmp_path: Path) -> None:
    lab = Lab(tmp_path, doc=server(1, state="inspected"))
    st = run(lab.executor.run_workflow(lab.host, "inspect"))
    assert st.applied_state == "inspected", st.conditions
    assert st.condition("Ready").status == "True"  # type: ignore[union-attr]
    report = st.inspection or {}
    assert report["disks"][0]["serial"] == "LABDISK0001"
    assert report["nics"][0]["mac"] == lab.host.interfaces[0].mac
    # The image had no network-config and a checkin URL; the checkin is gone afterwards.
    (request,) = lab.builds.requests.values()
    paths = {f["path"].rsplit("/", 1)[1] for f in request["files"]}
    assert "checkin-url" in paths and "network-config" not in paths
    assert lab.builds.checkins == {}
    assert bmc_calls(lab.world) == [
        "request_off", "eject_all_media", "insert_cd", "set_boot", "power_on",
        "request_off", "eject_all_media", "set_boot"]
    assert lab.world.os == "off" and lab.world.disk_image is None  # never touches a disk
