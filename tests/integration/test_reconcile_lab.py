"""The reconciler itself, against the lab's real peers: a git push installs a server.

``lab up`` in reconcile mode: the lab's target image published on the build service, the
example inventory as a bare git repository (lab-host-01 starting ``off``), and ``reconciler
run`` following it inside the lab's network namespace (embedded build service, the sushy-tools
emulator's libvirt driver controlling OVMF VMs, cloud-init and OpenSSH in the ephemeral OS and
in the installed Debian). The tests run in order, each pushing the next change:

1. push lab-host-01 ``provisioned``; ``kill -9`` the reconciler during the image write and
   start it again; it converges: SSH with the pinned key answers from the installed OS (root
   file system on the disk, its instance-id), status Ready at the pushed commit, and the step
   history shows the interrupted write and the resume;
2. push ``protected: true`` plus an image change: Stalled/Protected, and the BMC receives no
   POST or PATCH (its access log);
3. push lab-host-01 ``off``, a schema error in lab-host-02, and a server whose BMC port is
   closed: lab-host-01 powers off (the VM is shut off), lab-host-02 keeps its last good state,
   the dead BMC's server reports its error without holding up the others.

Per-step durations of the install are printed (and kept in build/reconcile-lab-timings.json).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.adapters import ssh
from reconciler.adapters.run import run
from reconciler.adapters.statedb import StateDB
from reconciler.engine.statusview import status_record
from reconciler.lab import daemons, gitops, lifecycle, netns
from reconciler.model.desired import desired_hosts
from reconciler.model.inventory import load_inventory
from reconciler.paths import example_inventory, project_root
from tests.fixtures.base_images import BaseImages, base_images  # noqa: F401 - the fixture
from tests.fixtures.lab import Lab, running_lab

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(3000)]

HOST = "lab-host-01"
GIT_ENV = {**gitops.GIT_IDENTITY}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory,
        base_images: BaseImages) -> Iterator[Lab]:  # noqa: F811 - the fixture
    workdir = tmp_path_factory.mktemp("reconcile-lab")
    with running_lab(workdir, hosts=2, images=base_images.images_dir, reconcile=True,
                     states={HOST: "off"}) as lab:
        yield lab


@pytest.fixture(scope="module")
def checkout(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("clone") / "inventory"
    run(["git", "clone", "-q", lab.state.inventory_repo, work], timeout=60, env=GIT_ENV)
    return work


def push(work: Path, message: str, edit: Callable[[Path], None]) -> str:
    """Commit ``edit`` and push it the way a person does: the reconciler commits inspection
    reports to the same branch, so a rejected push is pulled (rebased) and pushed again."""
    run(["git", "pull", "-q", "--ff-only"], timeout=60, cwd=work, env=GIT_ENV)
    edit(work)
    run(["git", "add", "-A"], timeout=60, cwd=work, env=GIT_ENV)
    run(["git", "commit", "-q", "-m", message], timeout=60, cwd=work, env=GIT_ENV)
    for attempt in range(5):
        pushed = run(["git", "push", "-q", "origin", "main"], timeout=60, cwd=work,
                     env=GIT_ENV, check=False)
        if pushed.returncode == 0:
            break
        assert attempt < 4, pushed.stderr.decode(errors="replace")
        run(["git", "pull", "-q", "--rebase"], timeout=60, cwd=work, env=GIT_ENV)
    head = run(["git", "rev-parse", "HEAD"], timeout=60, cwd=work, env=GIT_ENV)
    return f"main@sha1:{head.stdout.decode().strip()}"


def set_line(path: Path, key: str, value: str) -> None:
    lines = path.read_text().splitlines()
    out = [f"{key}: {value}" if line.startswith(f"{key}:") else line for line in lines]
    if out == lines and not any(line.startswith(f"{key}:") for line in lines):
        out.insert(3, f"{key}: {value}")
    path.write_text("\n".join(out) + "\n")


def includes(lab: Lab, revision: str | None, pushed: str) -> bool:
    """``revision`` (``main@sha1:<hex>``) is ``pushed`` or comes after it: the reconciler
    commits inspection reports to the same branch, so what it applied may be its own commit on
    top of the pushed one."""
    if not revision:
        return False
    found = run(["git", "merge-base", "--is-ancestor", pushed.split("@sha1:")[1],
                 revision.split("@sha1:")[1]], timeout=60, cwd=lab.state.inventory_repo,
                check=False)
    return found.returncode == 0


def host_row(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next((h for h in record["hosts"] if h["name"] == name), {})


def condition(row: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in row.get("conditions", ()) if c["type"] == kind), {})


def diagnostics(lab: Lab) -> str:
    parts = []
    try:
        parts.append(json.dumps(status_record(Path(lab.state.reconciler_data), HOST),
                                indent=1)[-4000:])
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        parts.append(f"(no status: {exc})")
    parts.append(daemons.log_tail(lifecycle.daemon(lab.paths, "service"))[-4000:])
    console = lab.paths.serial_log(lab.state.hosts[0])
    if console.exists():
        parts.append(console.read_bytes()[-3000:].decode(errors="replace"))
    return "\n---\n".join(parts)


def wait_for(lab: Lab, what: str, predicate: Callable[[dict[str, Any]], bool],
             timeout: float) -> dict[str, Any]:
    """Poll the reconciler's state database until ``predicate(status)`` (bounded)."""
    deadline = time.monotonic() + timeout
    data_dir = Path(lab.state.reconciler_data)
    while True:
        try:
            record = status_record(data_dir)
        except Exception:  # noqa: BLE001 - not created yet
            record = {"revision": {}, "hosts": []}
        if predicate(record):
            return record
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {timeout:g} s\n{diagnostics(lab)}")
        time.sleep(2)


def reconciler_pid(lab: Lab) -> int:
    pid = daemons.read_pid(lifecycle.daemon(lab.paths, "service"))
    assert pid is not None, "reconciler run is not running"
    return pid


def installed_os(lab: Lab) -> dict[str, str]:
    """SSH into lab-host-01 the way the engine does: its key, the pinned installed host key."""
    data_dir = Path(lab.state.reconciler_data)
    db = StateDB(data_dir / "state.db")
    try:
        st = db.hosts()[HOST]
        pinned = db.host_key(HOST, "installed", st.applied_target or "")
    finally:
        db.close()
    assert pinned is not None
    import asyncssh

    key = ssh.load_key(data_dir / "ssh" / "id_ed25519")
    inventory, _ = load_inventory(example_inventory())
    address = str(desired_hosts(inventory)[HOST].address)
    host_key = asyncssh.import_public_key(pinned[1])

    async def probe() -> dict[str, str]:
        async with await ssh.connect(address, key=key, host_key=host_key) as conn:
            out = {}
            for name, command in (("instance_id", "cat /var/lib/cloud/data/instance-id"),
                                  ("root", "findmnt -n -o SOURCE,FSTYPE /"),
                                  ("os", ". /etc/os-release; echo $ID-$VERSION_ID")):
                out[name] = (await conn.run(command, timeout=30)).stdout.strip()
            return out

    return netns.call_in_netns(lab.state.namespace, lambda: asyncio.run(probe()))


def test_push_installs_and_a_kill_9_during_the_write_resumes(lab: Lab, checkout: Path) -> None:
    record = wait_for(lab, "reconciling the first revision",
                      lambda r: condition(host_row(r, HOST), "Ready").get("status") == "True",
                      600)
    assert host_row(record, HOST)["appliedState"] == "off"
    pushed = time.monotonic()
    revision = push(checkout, "lab-host-01: install it", lambda w: set_line(
        w / "servers" / f"{HOST}.yaml", "state", "provisioned"))
    wait_for(lab, "writing the image", lambda r: host_row(r, HOST).get("step") == "write-image"
             and host_row(r, HOST)["progress"].get("downloaded_bytes", 0) > 0, 1200)
    first = reconciler_pid(lab)
    os.kill(first, signal.SIGKILL)
    assert daemons.wait_until_gone([first], 30) == []
    lifecycle.start_service(lab.paths, gitops.reconciler_argv(lab.paths.root / gitops.RUN_CONFIG))
    record = wait_for(lab, "installed", lambda r: condition(host_row(r, HOST), "Ready").get(
        "status") == "True" and includes(lab, host_row(r, HOST)["lastAppliedRevision"],
                                         revision), 1800)
    took = time.monotonic() - pushed
    row = host_row(record, HOST)
    assert row["appliedState"] == "provisioned"
    detail = status_record(Path(lab.state.reconciler_data), HOST)["hosts"][0]
    results = [(h["step"], h["result"]) for h in detail["history"]]
    assert ("write-image", "interrupted") in results
    resumed = results[results.index(("write-image", "interrupted")) + 1:]
    assert [s for s, _ in resumed[:3]] == ["ssh-ephemeral", "find-disk", "write-image"]
    assert resumed[-1] == ("ssh-installed", "ok")
    probe = installed_os(lab)
    assert probe["instance_id"].startswith(f"{HOST}-")
    assert probe["root"].startswith("/dev/") and "tmpfs" not in probe["root"]
    assert probe["os"] == "debian-12"
    steps = {h["step"]: h["seconds"] for h in detail["lastOperation"]}
    print(f"push -> installed OS: {took:.0f} s (with a kill -9 and a resume); steps: {steps}")
    out = project_root() / "build" / "reconcile-lab-timings.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"push_to_installed_s": took, "steps": steps}, indent=2) + "\n")


def test_protected_blocks_the_wipe_and_the_bmc_sees_nothing(lab: Lab, checkout: Path) -> None:
    log = lab.paths.logfile("sushy")
    offset = log.stat().st_size

    def edit(w: Path) -> None:
        set_line(w / "servers" / f"{HOST}.yaml", "protected", "true")
        profiles = w / "profiles.yaml"
        text = profiles.read_text()
        start = text.index('sha256: "') + len('sha256: "')
        profiles.write_text(text[:start] + "b" * 64 + text[start + 64:])

    revision = push(checkout, "lab-host-01: protected, and a new image", edit)
    record = wait_for(lab, "Stalled/Protected", lambda r: condition(
        host_row(r, HOST), "Stalled").get("reason") == "Protected"
        and includes(lab, r["revision"]["lastAttemptedRevision"], revision), 300)
    assert "BLOCKED (protected)" in condition(host_row(record, HOST), "Stalled")["message"]
    # Two more passes after it (poll interval 10 s): still nothing sent to the BMC.
    for _ in range(2):
        seen = record["revision"]["lastPassAt"]
        record = wait_for(lab, "another pass",
                          lambda r, seen=seen: r["revision"]["lastPassAt"] != seen, 120)
    mutations = [line for line in log.read_text(errors="replace")[offset:].splitlines()
                 if '"POST ' in line or '"PATCH ' in line]
    assert mutations == []
    assert lifecycle.status(lab.paths).domains[HOST] == "running"


def test_off_invalid_file_and_a_dead_bmc(lab: Lab, checkout: Path) -> None:
    def edit(w: Path) -> None:
        set_line(w / "servers" / f"{HOST}.yaml", "state", '"off"')
        set_line(w / "servers" / "lab-host-02.yaml", "state", "bogus")
        (w / "servers" / "lab-host-09.yaml").write_text(
            "profile: lab\nstate: \"off\"\nbmc:\n  address: http://127.0.0.1:1\n"
            "  system_id: dead\n  credentials: lab-bmc\n")

    revision = push(checkout, "lab-host-01 off, lab-host-02 broken, a dead BMC", edit)
    record = wait_for(lab, "lab-host-01 off", lambda r: condition(
        host_row(r, HOST), "Ready").get("status") == "True"
        and includes(lab, host_row(r, HOST)["lastAppliedRevision"], revision), 600)
    assert host_row(record, HOST)["appliedState"] == "off"
    assert lifecycle.status(lab.paths).domains[HOST] == "shut off"
    broken = host_row(record, "lab-host-02")
    assert broken["invalid"] and "lab-host-02.yaml" in broken["invalid"]
    assert broken["desiredState"] == "off"  # its last good state
    dead = host_row(record, "lab-host-09")
    assert dead.get("lastError") and "127.0.0.1:1" in dead["lastError"]


def remote_git(lab: Lab, *argv: str) -> str:
    out = run(["git", *argv], timeout=60, cwd=lab.state.inventory_repo, env=GIT_ENV)
    return out.stdout.decode().strip()


def history(lab: Lab, name: str) -> list[dict[str, Any]]:
    detail = status_record(Path(lab.state.reconciler_data), name)["hosts"][0]
    return list(detail.get("history") or [])


def brake_cli(lab: Lab, *argv: str) -> None:
    run([str(project_root() / ".venv" / "bin" / "reconciler"), *argv, "--data-dir",
         lab.state.reconciler_data], timeout=60)


def test_a_bmc_only_server_is_inspected_paused_resumed_and_its_report_committed(
        lab: Lab, checkout: Path) -> None:
    """lab-host-02, known only by its BMC, ``state: inspected``: the brake set while it is in
    the ephemeral OS stops it after its current step (no new step, no BMC action) until
    ``resume``; then the reconciler commits inspection/lab-host-02.yaml naming the disk serial
    and the MAC the VM really has, and further passes commit nothing."""
    name = "lab-host-02"
    vm = next(h for h in lab.state.hosts if h.name == name)
    original = yaml.safe_load((example_inventory() / "servers" / f"{name}.yaml").read_text())
    bmc_only = {"profile": original["profile"], "state": "inspected", "bmc": original["bmc"]}

    def edit(w: Path) -> None:
        (w / "servers" / f"{name}.yaml").write_text(yaml.safe_dump(bmc_only, sort_keys=False))
        (w / "servers" / "lab-host-09.yaml").unlink()

    pushed = time.monotonic()
    revision = push(checkout, f"{name}: inspect it, known only by its BMC", edit)
    wait_for(lab, "in the ephemeral OS", lambda r: host_row(r, name).get("step") in (
        "wait-checkin", "ssh-checkin"), 900)
    brake_cli(lab, "pause", "--reason", "integration test")
    try:
        # The step that was running ends; no other starts while the brake is on.
        record = wait_for(lab, "the running step ended", lambda r: all(
            h["result"] is not None for h in history(lab, name)), 600)
        rows = len(history(lab, name))
        log = lab.paths.logfile("sushy")
        offset = log.stat().st_size
        for _ in range(3):
            seen = record["revision"]["lastPassAt"]
            record = wait_for(lab, "another pass",
                              lambda r, seen=seen: r["revision"]["lastPassAt"] != seen, 120)
        assert record["paused"] is not None
        assert len(history(lab, name)) == rows, history(lab, name)[rows:]
        mutations = [line for line in log.read_text(errors="replace")[offset:].splitlines()
                     if '"POST ' in line or '"PATCH ' in line]
        assert mutations == []
    finally:
        brake_cli(lab, "resume")
    path = f"main:inspection/{name}.yaml"

    def committed(r: dict[str, Any]) -> bool:
        if condition(host_row(r, name), "Ready").get("status") != "True":
            return False
        try:
            doc = yaml.safe_load(remote_git(lab, "show", path))
        except Exception:  # noqa: BLE001 - not committed yet
            return False
        return bool(doc.get("hardware")) and bool(doc.get("redfish"))

    record = wait_for(lab, "the report committed", committed, 900)
    took = time.monotonic() - pushed
    assert host_row(record, name)["appliedState"] == "inspected"
    assert lifecycle.status(lab.paths).domains[name] == "shut off"
    report = yaml.safe_load(remote_git(lab, "show", path))
    assert report["server"] == name
    assert vm.disk_serial in [d.get("serial") for d in report["hardware"]["disks"]]
    assert vm.mac in [n["mac"] for n in report["hardware"]["nics"]]
    assert vm.mac in [n["mac"] for n in report["redfish"]["nics"]]
    subjects = remote_git(lab, "log", "--format=%s", f"{revision.split('@sha1:')[1]}..main")
    assert subjects and all(s.startswith("inspection: ") for s in subjects.splitlines())
    # Nothing else in those commits than inspection/.
    changed = remote_git(lab, "diff", "--name-only", revision.split("@sha1:")[1], "main")
    assert all(p.startswith("inspection/") for p in changed.splitlines()), changed
    # Further passes, the report unchanged: no new commit.
    head = remote_git(lab, "rev-parse", "main")
    for _ in range(3):
        seen = record["revision"]["lastPassAt"]
        record = wait_for(lab, "another pass",
                          lambda r, seen=seen: r["revision"]["lastPassAt"] != seen, 120)
    assert remote_git(lab, "rev-parse", "main") == head
    steps = {h["step"]: h["seconds"] for h in status_record(
        Path(lab.state.reconciler_data), name)["hosts"][0]["lastOperation"]}
    print(f"push -> report committed: {took:.0f} s (with a pause of at least 3 passes); "
          f"steps: {steps}")
    out = project_root() / "build" / "inspect-lab-timings.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"push_to_report_s": took, "steps": steps}, indent=2) + "\n")
