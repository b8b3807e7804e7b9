"""The reconcile loop over a real git repository (a bare remote, GitSource's mirror) and the fake
world: revisions, last good state, orphans, a hung fetch, the policy file."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.run import run
from reconciler.engine.loop import Reconciler
from reconciler.engine.source import GitSource
from reconciler.lab.gitops import GIT_IDENTITY
from reconciler.render.renderer import RenderSettings
from tests.fixtures.engine import Lab, World
from tests.fixtures.inventory import files, server


class Remote:
    """A bare repository and a work tree pushing to it."""

    def __init__(self, tmp_path: Path) -> None:
        self.bare = tmp_path / "remote.git"
        self.work = tmp_path / "work"
        run(["git", "init", "-q", "--bare", "-b", "main", self.bare], timeout=30)
        run(["git", "init", "-q", "-b", "main", self.work], timeout=30)
        run(["git", "remote", "add", "origin", self.bare], timeout=30, cwd=self.work)

    def push(self, servers: dict[str, Any], extra: dict[str, str] | None = None) -> str:
        for old in (self.work / "servers").glob("*.yaml") if (self.work / "servers").exists() \
                else ():
            old.unlink()
        for path, data in files(servers, extra=extra).items():
            target = self.work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        for argv in (["add", "-A"], ["commit", "-q", "--allow-empty", "-m", "change"],
                     ["push", "-q", "origin", "main"]):
            run(["git", *argv], timeout=30, cwd=self.work, env=GIT_IDENTITY)
        sha = run(["git", "rev-parse", "HEAD"], timeout=30, cwd=self.work).stdout.decode()
        return f"main@sha1:{sha.strip()}"


class Fleet:
    def __init__(self, tmp_path: Path, docs: dict[str, Any]) -> None:
        self.remote = Remote(tmp_path)
        self.lab = Lab(tmp_path, doc=docs.get("n1", server(1)))
        self.worlds: dict[str, World] = {"n1": self.lab.world}
        for name, doc in docs.items():
            if name != "n1":
                mac = (doc.get("interfaces") or [{"mac": "52:54:00:00:00:99"}])[0]["mac"]
                self.worlds[name] = World(mac)
        executor = self.lab.make_executor()
        executor.bmc_factory = lambda h: self.worlds[h.name]
        self.executor = executor
        self.source = GitSource(str(self.remote.bare), "main", "", tmp_path / "mirror",
                                timeout=5)
        self.reconciler = Reconciler(self.source, executor, RenderSettings(
            ssh_keys=("ssh-ed25519 AAAA reconciler",)), clock=self.lab.clock)
        executor.render = self.reconciler.render
        self.db = self.lab.db

    def passes(self, n: int = 2) -> list[Any]:
        async def go() -> list[Any]:
            actions: list[Any] = []
            for _ in range(n):
                actions = await self.reconciler.tick()
                await self.executor.wait_idle()
            return actions

        return asyncio.run(go())

    def calls(self, name: str) -> list[str]:
        return [c for c, _ in self.worlds[name].calls if c != "power_state"]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    docs = {"n1": server(1), "n2": server(2, state="off"), "n3": server(3, state="unmanaged")}
    made = Fleet(tmp_path, docs)
    made.docs = docs  # type: ignore[attr-defined]
    yield made
    made.db.close()


def test_a_revision_converges_and_is_recorded(fleet: Fleet) -> None:
    revision = fleet.remote.push(fleet.docs)  # type: ignore[attr-defined]
    fleet.passes(2)
    hosts = fleet.db.hosts()
    assert hosts["n1"].applied_state == "provisioned" and hosts["n2"].applied_state == "off"
    for name in ("n1", "n2"):
        assert hosts[name].last_applied_revision == revision
        assert hosts[name].condition("Ready").status == "True"  # type: ignore[union-attr]
    assert hosts["n3"].condition("Ready").reason == "Unmanaged"  # type: ignore[union-attr]
    assert fleet.worlds["n3"].calls == []  # unmanaged: not one Redfish call, not even a GET
    fleet_rev = fleet.db.fleet()
    assert fleet_rev["lastAppliedRevision"] == fleet_rev["lastAttemptedRevision"] == revision
    assert fleet_rev["lastFetched"] == revision


def test_an_invalid_file_keeps_its_last_good_state_and_the_others_move_on(fleet: Fleet) -> None:
    fleet.remote.push(fleet.docs)  # type: ignore[attr-defined]
    fleet.passes(2)
    broken = dict(fleet.docs)  # type: ignore[attr-defined]
    broken["n2"] = {**broken["n2"], "state": "bogus"}
    broken["n1"] = server(1, state="off")
    revision = fleet.remote.push(broken)
    before = fleet.calls("n2")
    fleet.passes(2)
    hosts = fleet.db.hosts()
    assert hosts["n2"].invalid and "servers/n2.yaml" in hosts["n2"].invalid
    assert hosts["n2"].desired_state == "off" and fleet.calls("n2") == before
    assert hosts["n1"].applied_state == "off" and hosts["n1"].last_applied_revision == revision
    # The fleet is not applied while a file is invalid.
    assert fleet.db.fleet()["lastAppliedRevision"] != revision


def test_a_removed_server_is_orphaned_and_never_touched(fleet: Fleet) -> None:
    fleet.remote.push(fleet.docs)  # type: ignore[attr-defined]
    fleet.passes(2)
    fewer = {k: v for k, v in fleet.docs.items() if k != "n2"}  # type: ignore[attr-defined]
    fleet.remote.push(fewer)
    before = list(fleet.worlds["n2"].calls)
    fleet.passes(2)
    st = fleet.db.hosts()["n2"]
    assert st.orphaned and st.condition("Ready").reason == "Orphaned"  # type: ignore[union-attr]
    assert fleet.worlds["n2"].calls == before
    # Pruned from the state once the retention has passed, still without a BMC call.
    fleet.lab.clock.now += fleet.reconciler.orphan_retention + 1
    fleet.passes(1)
    assert "n2" not in fleet.db.hosts() and fleet.worlds["n2"].calls == before


def test_a_hung_fetch_times_out_and_the_loop_goes_on(fleet: Fleet, tmp_path: Path) -> None:
    revision = fleet.remote.push(fleet.docs)  # type: ignore[attr-defined]
    fleet.passes(1)
    # A server that accepts the connection and never answers.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    run(["git", "remote", "set-url", "origin", f"http://127.0.0.1:{port}/repo.git"],
        timeout=30, cwd=fleet.source.clone_dir)
    fleet.source.timeout = 2
    try:
        fleet.passes(1)
    finally:
        stop.set()
        thread.join()
        listener.close()
        for conn in accepted:
            conn.close()
    info = fleet.db.fleet()
    assert info["lastFetchError"] and "timed out" in info["lastFetchError"]
    # The pass still reconciled the last good revision.
    assert info["lastAttemptedRevision"] == revision
    assert fleet.db.hosts()["n1"].condition("Ready").status == "True"  # type: ignore[union-attr]


def test_the_policy_file_holds_wipes_over_max_destructive(tmp_path: Path) -> None:
    docs = {"n1": server(1), "n2": server(2)}
    fleet = Fleet(tmp_path, docs)
    fleet.remote.push(docs, extra={"reconciler.yaml": "max_destructive: 1\n"})
    actions = fleet.passes(1)
    assert {a.host: a.hold.value if a.hold else None for a in actions} == {
        "n1": "MaxDestructive", "n2": "MaxDestructive"}
    hosts = fleet.db.hosts()
    stalled = hosts["n1"].condition("Stalled")
    assert stalled is not None and stalled.reason == "MaxDestructive"
    assert fleet.calls("n1") == [] and fleet.calls("n2") == []
    # A reviewed commit raises the limit: the wipes proceed.
    fleet.remote.push(docs, extra={"reconciler.yaml": "max_destructive: 2\n"})
    fleet.passes(1)
    assert fleet.db.hosts()["n1"].applied_state == "provisioned"
    fleet.db.close()


def test_power_is_asked_again_only_after_the_observe_interval(fleet: Fleet) -> None:
    fleet.reconciler.observe_interval = 120
    fleet.remote.push(fleet.docs)  # type: ignore[attr-defined]
    fleet.passes(2)

    def gets() -> int:
        return sum(1 for c, _ in fleet.worlds["n2"].calls if c == "power_state")

    before = gets()
    fleet.lab.clock.now += 60
    fleet.passes(1)
    assert gets() == before
    fleet.lab.clock.now += 61
    fleet.passes(1)
    assert gets() == before + 1


def test_a_broken_template_override_holds_every_server(fleet: Fleet) -> None:
    fleet.remote.push(fleet.docs)  # type: ignore[attr-defined]
    fleet.passes(2)
    changed = {**fleet.docs, "n1": server(1, state="off")}  # type: ignore[attr-defined]
    fleet.remote.push(changed, extra={"templates/user-data.j2":
                                      "{{ ''.__class__.__mro__[1].__subclasses__() }}\n"})
    before = fleet.calls("n1")
    fleet.passes(2)
    hosts = fleet.db.hosts()
    assert hosts["n1"].invalid and "templates/user-data.j2" in hosts["n1"].invalid
    assert hosts["n1"].applied_state == "provisioned" and fleet.calls("n1") == before
    # Renders (a workflow resumed meanwhile) keep the last good templates.
    assert fleet.reconciler.desired.templates == {}


def test_a_symlinked_server_file_keeps_its_last_good_state(fleet: Fleet) -> None:
    fleet.remote.push(fleet.docs)  # type: ignore[attr-defined]
    fleet.passes(2)
    link = fleet.remote.work / "servers" / "n2.yaml"
    fleet.remote.push(fleet.docs)  # type: ignore[attr-defined]
    link.unlink()
    link.symlink_to("/etc/passwd")
    for argv in (["add", "-A"], ["commit", "-q", "-m", "n2 -> /etc/passwd"],
                 ["push", "-q", "origin", "main"]):
        run(["git", *argv], timeout=30, cwd=fleet.remote.work, env=GIT_IDENTITY)
    fleet.passes(1)
    st = fleet.db.hosts()["n2"]
    assert st.invalid and "symlinks are not followed" in st.invalid
    assert not st.orphaned and st.desired_state == "off"
