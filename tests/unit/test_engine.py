"""The executor and the loop on fakes with the real interfaces: FakeBmc (recorded Redfish JSON),
a build client answering like the service, and an SSH "server" that is what the FakeBmc booted.

The fake world: the FakeBmc's calls move the server between "off", "ephemeral" (booted from the
inserted CD) and "installed" (booted from the disk the image was written to); a connection
succeeds only to the OS that runs, and only with that OS's pinned host key. Integration tests
prove the same flows against the sushy-tools emulator, OVMF VMs and real SSH.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from reconciler.adapters.redfish.errors import BmcUnreachable
from reconciler.adapters.redfish.fake import FakeBmc
from reconciler.adapters.ssh import Result
from reconciler.adapters.statedb import StateDB
from reconciler.engine.executor import Executor, Limits
from reconciler.errors import PermanentError, TemporaryError
from reconciler.model import parse_inventory
from reconciler.model.desired import DesiredHost, desired_hosts
from reconciler.model.policy import Policy
from reconciler.plan.decide import Kind, plan
from reconciler.plan.status import HostStatus
from reconciler.render.renderer import Renderer, RenderSettings
from tests.fixtures.inventory import files, server

SHA = "a" * 64


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class World(FakeBmc):
    """A FakeBmc whose server runs an OS: what booted decides who answers SSH."""

    def __init__(self, mac: str) -> None:
        super().__init__(FakeBmc.from_recording().docs)
        nic = {**self.docs["nics"][0], "MACAddress": mac, "PermanentMACAddress": mac}
        self.docs["nics"] = [nic]
        self.os = "off"
        self.disk_image: str | None = None
        self.fail_command: str | None = None
        self.hold_convert: asyncio.Event | None = None  # the write hangs until set

    def power_on(self) -> None:
        super().power_on()
        self._boot()

    def _boot(self) -> None:
        boot = self.system.get("Boot", {})
        if boot.get("BootSourceOverrideTarget") == "Cd" and self.media:
            self.os = "ephemeral"
            if boot.get("BootSourceOverrideEnabled") == "Once":
                boot["BootSourceOverrideTarget"] = "None"
        else:
            self.os = "installed" if self.disk_image else "off"

    def request_off(self, *, force: bool = False) -> bool:
        asked = super().request_off(force=force)
        self.os = "off"
        return asked

    def power_cycle(self) -> str:
        used = super().power_cycle()
        self._boot()
        return used


class FakeBuilds:
    def __init__(self, polls: int = 1) -> None:
        self.polls = polls
        self.requests: dict[str, dict[str, Any]] = {}
        self.seen: dict[str, int] = {}

    def submit(self, request: dict[str, Any]) -> dict[str, Any]:
        build_id = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        self.requests[build_id] = request
        return {"id": build_id, "state": "pending"}

    def build(self, build_id: str) -> dict[str, Any] | None:
        if build_id not in self.requests:
            return None
        self.seen[build_id] = self.seen.get(build_id, 0) + 1
        if self.seen[build_id] <= self.polls:
            return {"id": build_id, "state": "running"}
        return {"id": build_id, "state": "completed", "artifacts": {
            "isoUrl": f"http://service/artifacts/{build_id}/boot.iso",
            "ukiUrl": f"http://service/artifacts/{build_id}/uki.efi"}}


class Shell:
    """Answers the remote steps' commands like the ephemeral / installed OS would."""

    def __init__(self, world: World, instance_id: str, serial: str) -> None:
        self.world = world
        self.host = "198.18.0.10"
        self.instance_id = instance_id
        self.serial = serial
        self.commands: list[str] = []

    async def __aenter__(self) -> Shell:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def run(self, command: str, *, timeout: float, input: bytes | None = None,
                  check: bool = True) -> Result:
        self.commands.append(command)
        if self.world.fail_command and self.world.fail_command in command:
            self.world.fail_command = None
            raise TemporaryError(f"`{command}`: SSH failed: connection lost", delay=1)
        out = ""
        if command.startswith("cat /var/lib/cloud/data/instance-id"):
            out = self.instance_id
        elif "/dev/disk/by-id/*" in command and "lsblk" in command:
            out = (f"/dev/disk/by-id/virtio-{self.serial} /dev/vda\n--- lsblk\n"
                   + json.dumps({"blockdevices": [{"path": "/dev/vda", "serial": self.serial,
                                                   "wwn": None}]}))
        elif command.startswith("sha256sum"):
            out = f"{SHA}  /tmp/reconciler-image"
        elif command.startswith("qemu-img info"):
            out = json.dumps({"format": "qcow2"})
        elif command.startswith("qemu-img convert"):
            if self.world.hold_convert is not None:
                await self.world.hold_convert.wait()
            self.world.disk_image = SHA
        elif command.startswith("lsblk -J -o PATH,PARTTYPE"):
            out = json.dumps({"blockdevices": [{"path": "/dev/vda", "parttype": None,
                              "children": [{"path": "/dev/vda1", "parttype":
                                            "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"}]}]})
        elif command.startswith("findmnt"):
            out = "ext4" if self.world.os == "installed" else "tmpfs"
        return Result(command, 0, out, "")


class Lab:
    """One server n1 in a fake world, an executor over a real StateDB in tmp_path."""

    def __init__(self, tmp_path: Path, *, doc: dict[str, Any] | None = None,
                 limits: Limits | None = None) -> None:
        inv, problems = parse_inventory(files({"n1": doc or server(1)}))
        assert problems == []
        self.host: DesiredHost = desired_hosts(inv)["n1"]
        self.world = World(self.host.interfaces[0].mac)
        self.builds = FakeBuilds()
        self.clock = Clock()
        self.db = StateDB(tmp_path / "state.db")
        self.key = asyncssh.generate_private_key("ssh-ed25519")
        self.renderer = Renderer({}, RenderSettings(ssh_keys=("ssh-ed25519 AAAA reconciler",)))
        self.shells: list[Shell] = []
        self.connects: list[str] = []
        self.executor = self.make_executor(limits)

    def make_executor(self, limits: Limits | None = None) -> Executor:
        return Executor(
            self.db, bmc_factory=lambda h: self.world, build=self.builds,  # type: ignore[arg-type]
            render=lambda h, k: self.renderer.render(h, "provision", host_keys=k),
            client_key=self.key, limits=limits or Limits(max_attempts=3, backoff_base=5),
            clock=self.clock, sleep=self.clock.sleep, connect=self.connect, rand=lambda: 0.0)

    async def connect(self, address: str, *, key: Any, port: int, host_key: Any,
                      timeout: float) -> Shell:
        self.connects.append(self.world.os)
        if self.world.os == "off":
            raise TemporaryError(f"{address}:22: SSH not reachable: refused", delay=5)
        target = self.db.hosts()["n1"].target or ""
        stored = self.db.host_key("n1", self.world.os, target)
        assert stored is not None
        if host_key.export_public_key("openssh").decode().strip() != stored[1]:
            raise PermanentError(f"{address}:{port}: the host key is not the one pinned")
        instance = self.renderer.render(self.host).meta_data.split()[1]
        shell = Shell(self.world, instance, self.host.disk.serial or "")  # type: ignore[union-attr]
        self.shells.append(shell)
        return shell

    async def reconcile(self, desired: DesiredHost | None = None, revision: str = "r1") -> Any:
        desired = desired or self.host
        observed = await self.executor.observe({"n1": desired})
        (action,) = plan({"n1": desired}, observed, self.db.hosts(), Policy(), self.clock())
        if action.runnable:
            self.executor.start(desired, action, revision)
            await self.executor.wait_idle()
        return action


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
                        render=lambda h, k: None,  # type: ignore[arg-type,return-value]
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
