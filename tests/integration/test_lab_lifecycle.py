"""``lab up`` / ``status`` / ``down`` against the real daemons, and recovery after a crash.

Real peers: ip/netns, dnsmasq, libvirtd + virtlogd, the sushy-tools emulator with its libvirt
driver, QEMU + OVMF. About 20 s (libvirt probes QEMU's capabilities once per fresh lab dir).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from reconciler.adapters import secrets as creds
from reconciler.adapters.run import run
from reconciler.lab import daemons, lifecycle, netns
from reconciler.lab.spec import BMC_URL, NAMESPACE, LabPaths
from reconciler.lab.state import load
from tests.fixtures.lab import lab_lock, require_lab_peers

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _get(url: str, auth: tuple[str, str] | None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def _lab_pids(paths: LabPaths) -> dict[str, int | None]:
    return {n: daemons.read_pid(lifecycle.daemon(paths, n)) for n in lifecycle.DAEMONS}


def test_lab_up_status_crash_recovery_and_down(tmp_path: Path) -> None:
    require_lab_peers()
    paths = LabPaths(tmp_path / "lab")
    secrets_dir = tmp_path / "secrets"
    options = lifecycle.UpOptions(hosts=2, secrets_dir=secrets_dir)
    with lab_lock():
        try:
            state = lifecycle.up(paths, options)
            # What an inventory needs, written as YAML.
            assert load(paths.state_file) == state
            assert [h.mac for h in state.hosts] == ["52:54:00:18:00:01", "52:54:00:18:00:02"]
            assert state.accel == lifecycle.choose_accel("auto")
            assert state.bmc_url == BMC_URL

            # The bridge carries the gateway address inside the namespace, nowhere else.
            addr = run(["ip", "-n", NAMESPACE, "-4", "-o", "addr", "show", "labbr0"], timeout=10)
            assert b"198.18.0.1/24" in addr.stdout
            host_addrs = run(["ip", "-4", "-o", "addr"], timeout=10).stdout
            assert b"198.18.0." not in host_addrs

            # The BMC: basic auth, one System per VM, ids = domain UUIDs, the NIC MACs.
            cred = creds.resolve("lab-bmc", directory=secrets_dir)
            auth = (cred.username, cred.password)
            assert oct(Path(state.secrets_file).stat().st_mode & 0o777) == "0o600"

            def redfish() -> tuple[int, int, dict[str, object], list[str]]:
                denied, _ = _get(f"{BMC_URL}/redfish/v1/Systems", (cred.username, "wrong"))
                ok, systems = _get(f"{BMC_URL}/redfish/v1/Systems", auth)
                macs = []
                for host in state.hosts:
                    _, nics = _get(f"{BMC_URL}{host.redfish_path}/EthernetInterfaces", auth)
                    for member in nics.get("Members", []):  # type: ignore[union-attr]
                        _, nic = _get(f"{BMC_URL}{member['@odata.id']}", auth)
                        macs.append(str(nic.get("MACAddress", "")).lower())
                return denied, ok, systems, macs

            denied, ok, systems, macs = netns.call_in_netns(NAMESPACE, redfish)
            assert denied == 401
            assert ok == 200
            ids = sorted(str(m["@odata.id"]) for m in systems["Members"])  # type: ignore[attr-defined]
            assert ids == sorted(h.redfish_path for h in state.hosts)
            assert macs == [h.mac for h in state.hosts]

            st = lifecycle.status(paths)
            assert st.healthy
            assert st.domains == {"lab-host-01": "shut off", "lab-host-02": "shut off"}

            # A crash: libvirtd and the emulator die without cleanup. Status says so, and
            # `up` again removes the remains first and comes back healthy.
            pids = _lab_pids(paths)
            for name in ("libvirtd", "sushy"):
                pid = pids[name]
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
            killed = [p for n, p in pids.items() if n in ("libvirtd", "sushy") and p]
            assert daemons.wait_until_gone(killed, 10) == []
            assert not lifecycle.status(paths).healthy
            state2 = lifecycle.up(paths, lifecycle.UpOptions(hosts=1, secrets_dir=secrets_dir))
            assert [h.name for h in state2.hosts] == ["lab-host-01"]
            assert lifecycle.status(paths).healthy
            old = {p for p in pids.values() if p}
            assert {p for p in _lab_pids(paths).values() if p}.isdisjoint(old)
        finally:
            lifecycle.down(paths)

    # Everything up made is gone: namespace, daemons, credentials, lab files (the cache stays).
    assert not netns.exists(NAMESPACE)
    assert all(pid is None for pid in _lab_pids(paths).values())
    assert not (secrets_dir / "lab-bmc").exists()
    assert sorted(p.name for p in paths.root.iterdir()) == ["cache"]
    assert lifecycle.down(paths) == []  # idempotent
