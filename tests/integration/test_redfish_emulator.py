"""The driver and the ``reconciler bmc`` command against the real sushy-tools emulator.

One emulator (fake driver, 3 systems, Basic auth from an htpasswd file) under gunicorn on
127.0.0.1 serves the module; a loopback HTTP server serves the images InsertMedia downloads.
The fake driver lands power transitions 1-11 s after the request, so every wait polls with
a deadline. The out-of-band inventory is also read through the emulator's libvirt driver,
over libvirt's in-process ``test://`` driver loaded with the lab's own domain XML (no
libvirtd, no QEMU). Budget: about a minute.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from reconciler import cli
from reconciler.adapters.redfish import (
    Bmc,
    BmcEndpoint,
    BootEnabled,
    BootTarget,
    ClientSettings,
    PowerState,
)
from reconciler.adapters.redfish import errors as rf_errors
from reconciler.lab.domain import DomainFiles, domain_xml
from reconciler.lab.spec import DISK_GIB, LabHost, LabPaths, lab_host
from reconciler.log import register_secret
from tests.conftest import skip_or_fail
from tests.fixtures.redfish_emulator import (
    ImageServer,
    RedfishEmulator,
    free_port,
    image_server,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SETTINGS = ClientSettings(poll_interval=0.5)
POWER_DEADLINE = 30.0  # transitions land within 11 s


@pytest.fixture(scope="module")
def emulator() -> Iterator[RedfishEmulator]:
    with RedfishEmulator(systems=3, skip_storage_for=(2,)) as emu:
        register_secret(emu.password or "")
        yield emu


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    with image_server({"boot.iso": b"\0" * 65536, "uki.efi": b"MZ" + b"\0" * 4094}) as server:
        yield server


def bmc(emu: RedfishEmulator, index: int | None = 0, password: str | None = None) -> Bmc:
    user, pw = emu.credentials
    system = emu.system_ids[index] if index is not None else None
    return Bmc(BmcEndpoint(emu.url, user, password or pw, system_id=system), SETTINGS)


def test_provisioning_sequence(emulator: RedfishEmulator, images: ImageServer) -> None:
    iso = f"{images.url}/boot.iso"
    with bmc(emulator, 0) as host:
        assert host.quirks.name == "generic"
        assert host.graceful_off(POWER_DEADLINE) == "already-off"
        slot = host.insert_cd(iso)
        assert slot.endswith("/VirtualMedia/Cd")
        host.set_boot(BootTarget.CD, BootEnabled.ONCE)
        status = host.status()
        assert (status.boot_target, status.boot_mode) == ("Cd", "UEFI")
        assert (slot, iso) in status.media
        host.power_on()
        host.wait_power(PowerState.ON, POWER_DEADLINE)
        # Inserting again while mounted: ejected first, then inserted again.
        host.insert_cd(iso)
        assert host.graceful_off(POWER_DEADLINE) == "graceful"
        host.eject_all_media()
        host.clear_boot_override()
        status = host.status()
        assert all(image == "" for _, image in status.media)
        assert (status.boot_target, status.boot_enabled) == ("Hdd", "Continuous")
        assert host.power_cycle() == "On"  # an off host is simply powered on
        host.wait_power(PowerState.ON, POWER_DEADLINE)
        # The emulator does not allow PowerCycle: the driver falls back to ForceRestart.
        assert host.power_cycle() == "ForceRestart"
        host.wait_power(PowerState.ON, POWER_DEADLINE)
        assert host.requests_sent < 200


def test_http_boot_refused_is_permanent_with_a_hint(
    emulator: RedfishEmulator, images: ImageServer
) -> None:
    # The fake driver downloads the file, then answers 400: it cannot store HttpBootUri.
    with bmc(emulator, 1) as host, pytest.raises(rf_errors.BmcUnsupported) as info:
        host.set_boot(BootTarget.UEFI_HTTP, BootEnabled.ONCE, f"{images.url}/uki.efi")
    message = str(info.value)
    assert "boot UefiHttp: HttpBootUri refused: HTTP 400" in message
    assert "HttpBootUri" in message and "boot cd URL" in message


def test_inventory(emulator: RedfishEmulator) -> None:
    with bmc(emulator, 0) as host:
        inv = host.inventory()
    assert inv.uuid == emulator.system_ids[0]
    assert [n.mac for n in inv.nics] == ["52:54:00:19:00:00"]
    assert [(d.serial, d.size_bytes) for d in inv.drives] == [("1234570", 10 * 2**30)]


def test_oob_inventory(emulator: RedfishEmulator) -> None:
    # The fake driver's systems: the MAC and the drive tests/fixtures/redfish_emulator.py
    # configures (every fake drive's serial is "1234570"); FirmwareInventory answers 404.
    with bmc(emulator, 0) as host:
        record = host.oob_inventory()
    assert record["system"]["uuid"] == emulator.system_ids[0]
    assert record["nics"] == [{"mac": "52:54:00:19:00:00", "name": "52:54:00:19:00:00"}]
    assert record["drives"] == [{
        "name": "Drive 0", "model": "C123", "serial_number": "1234570", "wwn": None,
        "size_bytes": 10 * 2**30, "protocol": "SATA", "media_type": "HDD"}]
    assert record["manager"]["firmware_version"] == "1.00"
    assert {"name": "BMC", "version": "1.00"} in record["firmware"]
    [note] = record["unavailable"]
    assert note.startswith("firmware: HTTP 404 from GET /redfish/v1/UpdateService/Firmware")
    # System 2 has no storage: its Storage answers 500 and it has no SimpleStorage. The
    # inventory says so instead of failing (inventory() fails: see the next test).
    with bmc(emulator, 2) as host:
        record = host.oob_inventory()
    assert record["drives"] == [] and record["nics"][0]["mac"] == "52:54:00:19:00:02"
    assert any(n.startswith(f"drives: HTTP 500 from GET /redfish/v1/Systems/"
                            f"{emulator.system_ids[2]}/Storage: ") for n in record["unavailable"])


def libvirt_node(root: Path, hosts: list[LabHost], pooled: list[LabHost]) -> Path:
    """A node file for libvirt's ``test://`` driver: each host's domain as the lab defines
    it (``reconciler.lab.domain.domain_xml``), plus a dir pool over the lab's VM directory
    holding the disks of ``pooled`` hosts as volumes of the lab's size. The emulator's
    SimpleStorage lists only disks that are volumes of a pool (``_find_device_by_path``);
    ``reconciler lab up`` today creates its disks outside any pool."""
    paths = LabPaths(root)
    domains = [
        domain_xml(h, DomainFiles(disk=paths.disk(h), nvram=paths.nvram(h),
                                  serial_log=paths.serial_log(h)))
        for h in hosts
    ]
    volumes = "".join(
        f"<volume type='file'><name>{paths.disk(h).name}</name>"
        f"<capacity unit='bytes'>{DISK_GIB * 2**30}</capacity><allocation>0</allocation>"
        "<target><format type='qcow2'/></target></volume>"
        for h in pooled
    )
    pool = (
        "<pool type='dir'><name>lab-vms</name>"
        "<uuid>6f1f6c2e-8d0e-4c55-9a43-5b1e8a3b7c01</uuid>"
        "<capacity>1099511627776</capacity><allocation>0</allocation>"
        f"<available>1099511627776</available><target><path>{paths.vms}</path></target>"
        f"{volumes}</pool>"
    )
    node = root / "libvirt-node.xml"
    node.write_text("<node>\n" + "".join(domains) + pool + "\n</node>\n")
    return node


def test_oob_inventory_of_lab_domains(tmp_path: Path) -> None:
    """The emulator's libvirt driver, serving the lab's domains: the MAC each domain has and
    its disk (name and size: libvirt's SimpleStorage knows no serial) appear; Storage answers
    500 there, so the drives come from SimpleStorage."""
    try:
        import libvirt
    except ImportError:
        skip_or_fail("libvirt-python missing (LAB.md: libvirt-dev, pip install libvirt-python)")
    try:
        libvirt.open("test:///default").close()
    except libvirt.libvirtError as exc:
        skip_or_fail(f"libvirt's test driver is not available: {exc}")
    pooled, unpooled = lab_host(1), lab_host(2)
    node = libvirt_node(tmp_path, [pooled, unpooled], pooled=[pooled])
    config = {"SUSHY_EMULATOR_FAKE_DRIVER": False, "SUSHY_EMULATOR_LIBVIRT_URI": f"test://{node}"}
    with RedfishEmulator(systems=0, with_storage=False, workers=1, extra_config=config) as emu:
        register_secret(emu.password or "")
        user, pw = emu.credentials
        records = {}
        for host in (pooled, unpooled):
            endpoint = BmcEndpoint(emu.url, user, pw, system_id=host.system_id)
            with Bmc(endpoint, SETTINGS) as driver:
                records[host.name] = driver.oob_inventory()
    for host in (pooled, unpooled):
        record = records[host.name]
        assert record["system"]["uuid"] == host.system_id
        assert record["nics"] == [{"mac": host.mac, "name": host.mac}]
        assert {"name": "BMC", "version": "1.00"} in record["firmware"]
        assert any(n.startswith(f"drives: HTTP 500 from GET {host.redfish_path}/Storage: ")
                   for n in record["unavailable"])
    assert records[pooled.name]["drives"] == [{
        "name": f"{pooled.name}.qcow2", "model": None, "serial_number": None, "wwn": None,
        "size_bytes": DISK_GIB * 2**30, "protocol": None, "media_type": None}]
    assert records[unpooled.name]["drives"] == []  # as in today's lab: no pool over vms/


def test_5xx_answer_is_temporary_and_quotes_the_emulator(emulator: RedfishEmulator) -> None:
    # System 2 has no storage configured: the emulator answers 500 on its Storage.
    with bmc(emulator, 2) as host, pytest.raises(rf_errors.BmcBusy) as info:
        host.inventory()
    message = str(info.value)
    assert message.startswith(f"BMC {emulator.url}: inventory: BMC error: HTTP 500 from GET ")
    assert "Error finding storage collection" in message


def test_bad_credentials(emulator: RedfishEmulator) -> None:
    with bmc(emulator, 0, password="not-the-password") as host, \
            pytest.raises(rf_errors.BmcAuthFailed) as info:
        host.power_state()
    assert "HTTP 401" in str(info.value) and "not-the-password" not in str(info.value)


def test_unreachable() -> None:
    endpoint = BmcEndpoint(f"http://127.0.0.1:{free_port()}", "admin", "pw-unused")
    with pytest.raises(rf_errors.BmcUnreachable, match="connection refused"):
        Bmc(endpoint, SETTINGS).power_state()


def test_many_systems_need_an_id(emulator: RedfishEmulator) -> None:
    with bmc(emulator, None) as host, pytest.raises(rf_errors.BmcRejected, match="3 systems"):
        host.power_state()


def test_cli(
    emulator: RedfishEmulator, images: ImageServer, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user, pw = emulator.credentials
    monkeypatch.setenv("RECONCILER_CRED_EMU", f"{user}:{pw}")
    base = ["bmc", "--bmc", emulator.url, "--system", emulator.system_ids[1],
            "--credentials", "emu", "--timeout", str(POWER_DEADLINE)]

    def run(*args: str) -> tuple[int, str, str]:
        code = cli.main([*base, *args])
        out, err = capsys.readouterr()
        return code, out, err

    assert run("media", "insert", f"{images.url}/boot.iso")[0] == 0
    assert run("boot", "cd")[0] == 0
    code, out, _ = run("status")
    assert code == 0 and "boot:     Cd" in out and f"{images.url}/boot.iso" in out
    assert run("media", "eject")[0] == 0
    assert run("boot", "hdd")[0] == 0
    code, out, _ = run("inventory")
    assert code == 0 and json.loads(out)["uuid"] == emulator.system_ids[1]
    code, out, _ = run("inventory", "--oob", "--format", "yaml")
    assert code == 0 and yaml.safe_load(out)["nics"] == [
        {"mac": "52:54:00:19:00:01", "name": "52:54:00:19:00:01"}]
    code, out, _ = run("power", "cycle")
    assert code == 0 and "power cycle: On" in out

    code, _, err = run("media", "insert", f"{images.url}/boot.img")
    errors = [line for line in err.splitlines() if line.startswith("reconciler: error:")]
    assert code == 2 and len(errors) == 1 and ".iso" in errors[0]

    monkeypatch.setenv("RECONCILER_CRED_EMU", f"{user}:wrong-password-9")
    code, _, err = run("status")
    errors = [line for line in err.splitlines() if line.startswith("reconciler: error:")]
    assert code == 1 and len(errors) == 1
    assert errors[0].startswith(
        f"reconciler: error: BMC {emulator.url}: status: authentication failed: HTTP 401"
    )
    assert "wrong-password-9" not in err
