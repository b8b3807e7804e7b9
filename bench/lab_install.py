"""Lab, TCG: a git push -> the installed OS answering SSH, with per-step durations.

Brings a lab up in reconcile mode in a temporary directory (lab-host-01 starting ``off``),
pushes ``state: provisioned`` for it and times until ``reconciler status`` says Ready at the
pushed commit (the last step, ``ssh-installed``, is SSH answering from the installed OS over
its pinned host key). Side by side, in the same run, the baseline: the same VM shut down
and powered on through Redfish into the OS already on its disk, timed to SSH -- what a boot
costs on this machine without any provisioning. Prints both, the ratio, and the goal (at most
5 minutes).

Needs root, the lab's Debian packages and the cached base images (scripts/setup.sh).

    .venv/bin/python bench/lab_install.py [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.adapters import secrets as creds  # noqa: E402
from reconciler.adapters import ssh  # noqa: E402
from reconciler.adapters.redfish.client import BmcEndpoint  # noqa: E402
from reconciler.adapters.redfish.driver import Bmc  # noqa: E402
from reconciler.adapters.run import run  # noqa: E402
from reconciler.adapters.statedb import StateDB  # noqa: E402
from reconciler.commands.run import status_record  # noqa: E402
from reconciler.imagebuild import cache  # noqa: E402
from reconciler.lab import gitops, lifecycle, netns  # noqa: E402
from reconciler.lab.spec import LabPaths  # noqa: E402

HOST = "lab-host-01"
GOAL = 300.0


def wait(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    raise SystemExit(f"bench: not {what} within {timeout:g} s")


def row(data: Path) -> dict[str, Any]:
    try:
        record = status_record(data, HOST)
    except Exception:  # noqa: BLE001 - not there yet
        return {}
    return record["hosts"][0] if record["hosts"] else {}


def includes(repo: str, applied: str | None, pushed: str) -> bool:
    """``applied`` is ``pushed`` or a later commit (the reconciler's own report commits)."""
    if not applied:
        return False
    return run(["git", "merge-base", "--is-ancestor", pushed.split("@sha1:")[1],
                applied.split("@sha1:")[1]], timeout=60, cwd=repo, check=False).returncode == 0


def ready_at(data: Path, revision: str | None, repo: str = "") -> bool:
    r = row(data)
    ready: dict[str, Any] = next(
        (c for c in r.get("conditions", ()) if c["type"] == "Ready"), {})
    return ready.get("status") == "True" and (
        revision is None or includes(repo, r.get("lastAppliedRevision"), revision))


def push(work: Path) -> None:
    """Push ``work``'s main; the reconciler commits inspection reports to the same branch, so a
    rejected push is pulled (rebased) and pushed again."""
    env = gitops.GIT_IDENTITY
    for _ in range(5):
        if run(["git", "push", "-q", "origin", "main"], timeout=60, cwd=work, env=env,
               check=False).returncode == 0:
            return
        run(["git", "pull", "-q", "--rebase"], timeout=60, cwd=work, env=env)
    raise SystemExit("bench: could not push")


def push_install(repo: str, work: Path) -> str:
    env = gitops.GIT_IDENTITY
    run(["git", "clone", "-q", repo, work], timeout=60, env=env)
    server = work / "servers" / f"{HOST}.yaml"
    server.write_text(server.read_text().replace('state: "off"', "state: provisioned"))
    run(["git", "commit", "-qam", "install lab-host-01"], timeout=60, cwd=work, env=env)
    push(work)
    head = run(["git", "rev-parse", "HEAD"], timeout=60, cwd=work).stdout.decode().strip()
    return f"main@sha1:{head}"


def reboot_to_ssh(paths: LabPaths, state: Any, data: Path, address: str) -> float:
    """Shut the installed VM down gracefully, then power it on through Redfish; seconds from
    power-on until its OS answers SSH (pinned key): one boot, no provisioning."""
    db = StateDB(data / "state.db")
    try:
        st = db.hosts()[HOST]
        pinned = db.host_key(HOST, "installed", st.applied_target or "")
    finally:
        db.close()
    assert pinned is not None
    import asyncssh

    key = ssh.load_key(data / "ssh" / "id_ed25519")
    host_key = asyncssh.import_public_key(pinned[1])
    c = creds.resolve(state.credentials, directory=Path(state.secrets_file).parent)
    endpoint = BmcEndpoint(state.bmc_url, c.username, c.password,
                           system_id=state.hosts[0].system_id)

    def off() -> None:
        with Bmc(endpoint) as bmc:
            bmc.graceful_off(timeout=120)

    def on() -> None:
        with Bmc(endpoint) as bmc:
            bmc.power_on()

    async def answer() -> None:
        conn = await ssh.wait_for_ssh(address, key=key, host_key=host_key,
                                      deadline=time.monotonic() + 600)
        async with conn:
            await conn.run("true", timeout=30)

    netns.call_in_netns(state.namespace, off)
    start = time.monotonic()
    netns.call_in_netns(state.namespace, on)
    netns.call_in_netns(state.namespace, lambda: asyncio.run(answer()))
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: the lab needs root")
    images = cache.ensure("amd64")
    work = Path(tempfile.mkdtemp(prefix="bench-lab-"))
    paths = LabPaths(work / "lab")
    options = lifecycle.UpOptions(hosts=1, secrets_dir=work / "secrets", service=(
        lifecycle.ServiceOptions(images.images_dir, states={HOST: "off"})))
    load = os.getloadavg()[0]
    try:
        state = lifecycle.up(paths, options)
        data = Path(state.reconciler_data)
        wait("converged on the first revision", lambda: ready_at(data, None), 300)
        start = time.monotonic()
        revision = push_install(state.inventory_repo, work / "clone")
        wait("installed", lambda: ready_at(data, revision, state.inventory_repo), 1800)
        install = time.monotonic() - start
        steps = {h["step"]: h["seconds"] for h in row(data)["lastOperation"]}
        from reconciler.model.desired import desired_hosts
        from reconciler.model.inventory import load_inventory
        from reconciler.paths import example_inventory

        inventory, _ = load_inventory(example_inventory())
        address = str(desired_hosts(inventory)[HOST].address)
        baseline = reboot_to_ssh(paths, state, data, address)
    finally:
        if not args.keep:
            lifecycle.down(paths)
            shutil.rmtree(work, ignore_errors=True)
    print(f"lab install, TCG, load {load:.1f} at start ({os.cpu_count()} cores)")
    print(f"  {'step':<16}{'seconds':>10}")
    for name, seconds in steps.items():
        print(f"  {name:<16}{seconds:>10.1f}")
    print(f"  {'push -> SSH on the installed OS':<34}{install:>8.1f} s "
          f"(goal <= {GOAL:.0f} s: {'met' if install <= GOAL else 'NOT met'})")
    print(f"  {'baseline: Redfish power on -> SSH':<34}{baseline:>8.1f} s")
    print(f"  ratio install / boot-to-SSH: {install / baseline:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
