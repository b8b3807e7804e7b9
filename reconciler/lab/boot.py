"""Boot a lab host into the ephemeral OS through Redfish, as the seed's sequences do.

Provisioning (seed: "Provisioning a Known Server"): render the build request from the
inventory (static address from IPAM, NIC matched by MAC), submit it, wait for the build,
insert the ISO through the Redfish driver, boot Cd once, power on, wait for SSH on the IPAM
address and read ``/var/lib/cloud/data/instance-id``.

Inspection (seed: "Inspection"): no network-config, a checkin URL; register the checkin,
boot, DHCP from the lab's dnsmasq, wait for the checkin's addresses, SSH to them and verify
the instance-id, then run ``hw-inventory``.

Everything that talks to the lab (build service, BMC, SSH) runs inside the lab's network
namespace: HTTP from a thread that entered it (:func:`netns.call_in_netns`), OpenSSH through
``ip netns exec``. Each phase is timed.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from reconciler.adapters import secrets as creds
from reconciler.adapters.redfish.client import BmcEndpoint
from reconciler.adapters.redfish.driver import Bmc, BootEnabled, BootTarget, PowerState
from reconciler.adapters.run import run
from reconciler.errors import InputError, PermanentError, ToolFailed
from reconciler.lab import netns
from reconciler.lab.spec import LabHost
from reconciler.lab.state import LabState

if TYPE_CHECKING:
    from reconciler.model.desired import DesiredHost
    from reconciler.model.inventory import Inventory

LOG = logging.getLogger(__name__)
T = TypeVar("T")

INSTANCE_ID_FILE = "/var/lib/cloud/data/instance-id"


@dataclass
class Timings:
    """Seconds per phase, in the order they ran; ``guest_cpu``: CPU seconds the VM's QEMU
    used from power-on to SSH -- about the wall time the boot takes on an idle core under
    TCG, whatever else loads the machine."""

    phases: dict[str, float] = field(default_factory=dict)
    guest_cpu: float | None = None

    def measure(self, name: str, func: Callable[[], T]) -> T:
        start = time.monotonic()
        try:
            return func()
        finally:
            self.phases[name] = time.monotonic() - start

    @property
    def total(self) -> float:
        return sum(self.phases.values())

    def describe(self) -> str:
        parts = [f"{name} {secs:.1f} s" for name, secs in self.phases.items()]
        text = ", ".join(parts) + f"; total {self.total:.1f} s"
        if self.guest_cpu is not None:
            text += f" (QEMU CPU to SSH {self.guest_cpu:.1f} s)"
        return text


def qemu_cpu_seconds(state: LabState, host: LabHost) -> float | None:
    """User + system CPU of the host's QEMU process (libvirt's pid file), None if not running."""
    pidfile = Path(state.state_dir) / "libvirt" / "run" / "qemu" / f"{host.name}.pid"
    try:
        pid = int(pidfile.read_text().strip())
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (OSError, ValueError):
        return None
    # Fields after the command name start at field 3 (state): utime is 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Booted:
    host: str
    address: str
    instance_id: str
    build_id: str
    iso_url: str
    uki_url: str
    timings: Timings
    hw_inventory: dict[str, Any] | None = None


# ---------------------------------------------------------------- build service client


def _http(
    method: str, url: str, body: object | None = None, timeout: float = 30
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        return status, text


def submit_build(
    service_url: str, request: dict[str, Any], timeout: float = 600
) -> dict[str, Any]:
    """POST the build request, poll until completed; the final status document."""
    status, doc = _http("POST", f"{service_url}/api/v1/builds", request)
    if status != 202 or not isinstance(doc, dict):
        raise ToolFailed(f"POST /api/v1/builds answered {status}: {doc}")
    build_id = str(doc["id"])
    deadline = time.monotonic() + timeout
    while True:
        status, doc = _http("GET", f"{service_url}/api/v1/builds/{build_id}")
        if status == 200 and isinstance(doc, dict):
            if doc.get("state") == "completed":
                return doc
            if doc.get("state") == "failed":
                raise ToolFailed(f"build {build_id} failed: {doc.get('error')}")
        if time.monotonic() > deadline:
            raise ToolFailed(f"build {build_id} not completed within {timeout:g} s: {doc}")
        time.sleep(0.5)


def register_checkin(service_url: str, checkin_id: str) -> None:
    status, doc = _http("POST", f"{service_url}/api/v1/checkins/{checkin_id}", {"addresses": []})
    if status not in (200, 201, 204):
        raise ToolFailed(f"POST /api/v1/checkins/{checkin_id} answered {status}: {doc}")


def checkin_addresses(service_url: str, checkin_id: str) -> list[str]:
    status, doc = _http("GET", f"{service_url}/api/v1/checkins/{checkin_id}")
    if status == 200 and isinstance(doc, dict):
        return [str(a) for a in doc.get("addresses") or []]
    return []


def delete_checkin(service_url: str, checkin_id: str) -> None:
    _http("DELETE", f"{service_url}/api/v1/checkins/{checkin_id}")


# ---------------------------------------------------------------- BMC


def bmc_for(state: LabState, host: LabHost) -> Bmc:
    secrets_dir = Path(state.secrets_file).parent
    c = creds.resolve(state.credentials, directory=secrets_dir)
    return Bmc(BmcEndpoint(state.bmc_url, c.username, c.password, system_id=host.system_id))


def boot_cd(state: LabState, host: LabHost, iso_url: str, timings: Timings) -> None:
    """Power off, eject, insert the ISO, boot Cd once, power on (seed's Redfish sequence)."""

    def prepare() -> None:
        with bmc_for(state, host) as bmc:
            if bmc.power_state() != PowerState.OFF:
                bmc.graceful_off(timeout=30)
            bmc.eject_all_media()

    def insert() -> None:
        with bmc_for(state, host) as bmc:
            bmc.insert_cd(iso_url)

    def power_on() -> None:
        with bmc_for(state, host) as bmc:
            bmc.set_boot(BootTarget.CD, BootEnabled.ONCE)
            bmc.power_on()

    netns.call_in_netns(state.namespace, prepare)
    timings.measure("insert", lambda: netns.call_in_netns(state.namespace, insert))
    netns.call_in_netns(state.namespace, power_on)


def power_off(state: LabState, host: LabHost) -> None:
    """Force the host off and eject its media (cleanup after a boot)."""

    def off() -> None:
        with bmc_for(state, host) as bmc:
            if bmc.power_state() != PowerState.OFF:
                bmc.graceful_off(timeout=5, force_timeout=60)
            bmc.eject_all_media()

    netns.call_in_netns(state.namespace, off)


# ---------------------------------------------------------------- SSH


def ssh_argv(state: LabState, key: Path, address: str, command: str) -> list[str]:
    return [
        *netns.exec_prefix(state.namespace), "ssh", "-i", str(key),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
        f"root@{address}", command,
    ]


def ssh(state: LabState, key: Path, address: str, command: str, timeout: float = 60) -> str:
    return run(ssh_argv(state, key, address, command), timeout=timeout).stdout.decode()


def wait_for_ssh(state: LabState, key: Path, address: str, *, timeout: float) -> str:
    """Poll until SSH to ``address`` works; return the instance-id it reads."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        proc = run(
            ssh_argv(state, key, address, f"cat {INSTANCE_ID_FILE}"), timeout=30, check=False
        )
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.decode().strip()
        last = proc.stderr.decode(errors="replace").strip()[-300:]
        time.sleep(2)
    raise ToolFailed(f"no SSH to {address} within {timeout:g} s: {last}")


# ---------------------------------------------------------------- the two workflows


def _load_desired(inventory_dir: Path) -> tuple[Inventory, dict[str, DesiredHost]]:
    """The inventory and its desired hosts, or the first problem as a one-line error."""
    from reconciler.model.desired import desired_hosts
    from reconciler.model.inventory import load_inventory

    inventory, problems = load_inventory(inventory_dir)
    if problems:
        raise InputError(f"{inventory_dir}/{problems[0]}", hint=f"{len(problems)} problem(s)")
    return inventory, desired_hosts(inventory)


def provision(
    state: LabState,
    host: LabHost,
    *,
    inventory_dir: Path,
    public_key: str,
    private_key: Path,
    ssh_timeout: float = 300,
) -> Booted:
    """Boot ``host`` into the ephemeral OS with its inventory identity (static IPAM address)."""
    from reconciler.render.renderer import RenderSettings, render_host

    inventory, desired = _load_desired(inventory_dir)
    matches = [h for h in desired.values() if any(i.mac == host.mac for i in h.interfaces)]
    if not matches:
        raise InputError(f"{inventory_dir}: no server has an interface with MAC {host.mac}")
    wanted = matches[0]
    address = wanted.address
    if address is None:
        raise InputError(f"{inventory_dir}: {wanted.name} has no static/auto primary address")
    rendered = render_host(
        wanted, overrides=inventory.templates,
        settings=RenderSettings(public_url=state.service_url, ssh_keys=(public_key,)),
    )
    timings = Timings()
    status = timings.measure(
        "build",
        lambda: netns.call_in_netns(
            state.namespace, lambda: submit_build(state.service_url, rendered.build_request)
        ),
    )
    iso_url = str(status["artifacts"]["isoUrl"])
    boot_cd(state, host, iso_url, timings)
    instance_id = timings.measure(
        "power-on to SSH",
        lambda: wait_for_ssh(state, private_key, str(address), timeout=ssh_timeout),
    )
    timings.guest_cpu = qemu_cpu_seconds(state, host)
    expected = _meta_instance_id(rendered.meta_data)
    if instance_id != expected:
        raise PermanentError(
            f"{address} answers with instance-id {instance_id!r}, expected {expected!r}"
        )
    return Booted(
        wanted.name, str(address), instance_id, str(status["id"]), iso_url,
        str(status["artifacts"]["ukiUrl"]), timings,
    )


def _meta_instance_id(meta_data: str) -> str:
    import yaml

    doc = yaml.safe_load(meta_data)
    return str(doc["instance-id"])


def inspect(
    state: LabState,
    host: LabHost,
    *,
    inventory_dir: Path,
    public_key: str,
    private_key: Path,
    ssh_timeout: float = 300,
) -> Booted:
    """Boot ``host`` knowing only its BMC: DHCP, checkin, SSH, hw-inventory."""
    from reconciler.render.renderer import RenderSettings, render_host

    inventory, desired = _load_desired(inventory_dir)
    # Inspection needs only the profile (kernel, initramfs, cmdline): take any server's.
    template = next(iter(desired.values()))
    inspection_id = str(uuid.uuid4())
    rendered = render_host(
        template, "inspect", inspection_id=inspection_id, overrides=inventory.templates,
        settings=RenderSettings(public_url=state.service_url, ssh_keys=(public_key,)),
    )
    timings = Timings()

    def build() -> dict[str, Any]:
        doc = submit_build(state.service_url, rendered.build_request)
        register_checkin(state.service_url, inspection_id)
        return doc

    status = timings.measure("build", lambda: netns.call_in_netns(state.namespace, build))
    iso_url = str(status["artifacts"]["isoUrl"])
    boot_cd(state, host, iso_url, timings)

    def wait_checkin() -> list[str]:
        deadline = time.monotonic() + ssh_timeout
        while time.monotonic() < deadline:
            found = netns.call_in_netns(
                state.namespace, lambda: checkin_addresses(state.service_url, inspection_id)
            )
            if found:
                return found
            time.sleep(2)
        raise ToolFailed(f"no checkin for {inspection_id} within {ssh_timeout:g} s")

    addresses = timings.measure("power-on to checkin", wait_checkin)

    def verify() -> str | None:
        # A DHCP address is not proof of identity: the seed SSHes to each checked-in
        # address and keeps the one whose instance-id is this inspection's id.
        for address in addresses:
            try:
                got = wait_for_ssh(state, private_key, address, timeout=60)
            except ToolFailed:
                continue
            if got == inspection_id:
                return address
        return None

    verified = timings.measure("checkin to SSH", verify)
    timings.guest_cpu = qemu_cpu_seconds(state, host)
    if verified is None:
        raise PermanentError(f"no checked-in address {addresses} answers with {inspection_id}")
    raw = ssh(state, private_key, verified, f"/usr/local/bin/hw-inventory {inspection_id}")
    try:
        hw = json.loads(raw)
    except json.JSONDecodeError:
        raise ToolFailed(f"hw-inventory on {verified} printed no JSON: {raw[:300]}") from None
    netns.call_in_netns(
        state.namespace, lambda: delete_checkin(state.service_url, inspection_id)
    )
    return Booted(
        host.name, verified, inspection_id, str(status["id"]), iso_url,
        str(status["artifacts"]["ukiUrl"]), timings, hw,
    )
