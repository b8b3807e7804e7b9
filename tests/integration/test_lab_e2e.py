"""``reconciler lab boot``: the engine's workflows on one lab host, by hand, against real peers.

The lab runs only the build service here (``lab up --service-only``); ``lab boot`` is a thin
call of the engine (:func:`reconciler.engine.executor.Executor.run_workflow`) from inside the
lab's network namespace: the sushy-tools emulator's libvirt driver controlling OVMF VMs (q35,
TCG), dnsmasq as the network's DHCP server, cloud-init and OpenSSH in the ephemeral OS.

1. Inspection (seed: "Inspection"), lab host 2: no network-config, a checkin URL; DHCP from
   the lab's dnsmasq; the checkin arrives at the build service; SSH (pinned host key) to the
   checked-in address verifies the instance-id; hw-inventory reports the VM's disk serial and
   MAC; the host is left off with its checkin deleted.
2. Provisioning (seed: "Provisioning a Known Server"), lab host 1, the whole sequence to the
   installed OS, as ``lab boot --host 1`` runs it.
3. UEFI HTTP boot, as far as the emulator goes: its libvirt driver takes ``HttpBootUri``,
   downloads the UKI from the build service and attaches it as a virtual CD (it has no
   firmware HTTP boot); the test checks the emulator fetched exactly the UKI the service built.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.adapters import secrets as creds
from reconciler.adapters.buildclient import BuildClient
from reconciler.adapters.redfish.client import BmcEndpoint
from reconciler.adapters.redfish.driver import Bmc, BootTarget
from reconciler.cli import main
from reconciler.lab import lifecycle, netns
from reconciler.lab.spec import LabHost
from reconciler.model.desired import desired_hosts
from reconciler.model.inventory import load_inventory
from reconciler.paths import example_inventory
from reconciler.render.renderer import RenderSettings, render_host
from tests.fixtures.base_images import BaseImages, base_images  # noqa: F401 - the fixture
from tests.fixtures.lab import Lab, running_lab

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def lab(
    tmp_path_factory: pytest.TempPathFactory,
    base_images: BaseImages,  # noqa: F811 - the fixture
) -> Iterator[Lab]:
    workdir = tmp_path_factory.mktemp("lab-e2e")
    with running_lab(workdir, hosts=2, images=base_images.images_dir) as lab:
        yield lab


def _console_tail(lab: Lab, host: LabHost) -> str:
    path = lab.paths.serial_log(host)
    if not path.exists():
        return "(no console log)"
    return path.read_bytes()[-3000:].decode(errors="replace")


def _lab_boot(lab: Lab, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(["lab", "--state-dir", str(lab.paths.root), "boot", *args, "--timeout", "900"])
    out = capsys.readouterr().out
    if code != 0:
        host = lab.state.hosts[int(args[1]) - 1]
        pytest.fail(f"lab boot {' '.join(args)}: exit {code}\n{out}\n--- console ---\n"
                    f"{_console_tail(lab, host)}")
    print(out)
    return out


def test_inspect_dhcp_checkin_ssh_and_hw_inventory(
        lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    host = lab.state.hosts[1]
    out = _lab_boot(lab, capsys, "--host", "2", "--inspect")
    report = json.loads(out[out.index("{"):out.rindex("}") + 1])
    # The address came from the lab's dnsmasq, for this VM's MAC.
    leases = lifecycle.status(lab.paths).leases
    assert host.mac in leases
    assert [d["serial"] for d in report["disks"]] == [host.disk_serial]
    assert host.mac in [n["mac"] for n in report["nics"]]
    for step in ("wait-checkin", "ssh-checkin", "hw-inventory", "delete-checkin"):
        assert f"{step}: ok" in out
    assert lifecycle.status(lab.paths).domains[host.name] == "shut off"


def test_provision_installs_the_target_image(
        lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    out = _lab_boot(lab, capsys, "--host", "1")
    assert "provision done" in out
    assert "ssh-installed: ok" in out and "root on ext4" in out


def test_uefi_http_boot_uri_emulated_as_virtual_cd_of_the_uki(lab: Lab) -> None:
    """The emulator's libvirt driver has no firmware HTTP boot: it downloads HttpBootUri and
    attaches it as a CD. Prove that far: the PATCH is accepted, reads back, and the domain's
    CD holds exactly the UKI the build service built."""
    host = lab.state.hosts[0]
    inventory, _ = load_inventory(example_inventory())
    wanted = desired_hosts(inventory)["lab-host-01"]
    rendered = render_host(wanted, overrides=inventory.templates,
                           settings=RenderSettings(public_url=lab.state.service_url))
    client = BuildClient(lab.state.service_url)

    def build() -> str:
        build_id = str(client.submit(rendered.build_request)["id"])
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            doc = client.build(build_id) or {}
            if doc.get("state") == "completed":
                return str(doc["artifacts"]["ukiUrl"])
            if doc.get("state") == "failed":
                pytest.fail(f"build failed: {doc.get('error')}")
            time.sleep(0.5)  # polling the build's state, bounded by the deadline
        pytest.fail("the build did not complete in 300 s")

    uki_url = netns.call_in_netns(lab.state.namespace, build)
    c = creds.resolve(lab.state.credentials, directory=lab.secrets_dir)
    endpoint = BmcEndpoint(lab.state.bmc_url, c.username, c.password, system_id=host.system_id)

    def patch() -> str:
        with Bmc(endpoint) as bmc:
            bmc.set_boot(BootTarget.UEFI_HTTP, http_uri=uki_url)
            return str(bmc.get_json(host.redfish_path)["Boot"]["HttpBootUri"])

    def clean_up() -> None:
        with Bmc(endpoint) as bmc:
            bmc.request_off(force=True)
            bmc.eject_all_media()

    try:
        shown = netns.call_in_netns(lab.state.namespace, patch)
        assert shown == uki_url
        attached = _inserted_media(lab, host)
        assert _sha256_file(attached) == _sha256_url(lab, uki_url)
    finally:
        netns.call_in_netns(lab.state.namespace, clean_up)


# ---------------------------------------------------------------- helpers


def _inserted_media(lab: Lab, host: LabHost) -> Path:
    xml = lifecycle.virsh(lab.paths, ["dumpxml", "--inactive", host.name]).stdout.decode()
    for disk in ET.fromstring(xml).iter("disk"):
        source = disk.find("source")
        if disk.get("device") == "cdrom" and source is not None and source.get("file"):
            path = Path(str(source.get("file")))
            assert path.parent == lab.paths.pool  # uploaded into the emulator's storage pool
            return path
    pytest.fail(f"{host.name} has no virtual media attached:\n{xml}")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256_url(lab: Lab, url: str) -> str:
    def fetch() -> str:
        h = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=60) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    return netns.call_in_netns(lab.state.namespace, fetch)
