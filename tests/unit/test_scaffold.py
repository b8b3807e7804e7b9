"""``reconciler scaffold SERVER`` (issue 14, part 6): a server file filled from the server's
inspection report -- primary MAC, disk by WWN or serial, architecture -- valid against the
server schema and the inventory's checks, with comments on what to review; it writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.cli import main
from reconciler.model import desired_hosts, parse_inventory
from reconciler.model.inspection import dump, hardware_section, merge, redfish_section
from reconciler.model.scaffold import SERVER_MODELINE, scaffold
from tests.fixtures.inventory import files, server, write

HW = {
    "system": {"vendor": "QEMU"}, "cpus": {"logical": 2, "architecture": "x86_64"},
    "memory": {"totalBytes": 1 << 31},
    "disks": [
        {"name": "vda", "serial": "LABDISK0001", "wwn": None, "sizeBytes": 20 << 30,
         "rotational": True},
        {"name": "sda", "serial": "QM00005", "wwn": "0x5000C500A1B2C3D4",
         "sizeBytes": 240 << 30, "rotational": False, "transport": "sata"},
        {"name": "sdb", "serial": "USBSTICK", "wwn": None, "sizeBytes": 8 << 30,
         "rotational": False, "transport": "usb"},
    ],
    "nics": [
        {"name": "enp1s0", "mac": "52:54:00:18:00:01", "link": False, "driver": "virtio_net"},
        {"name": "enp2s0", "mac": "52:54:00:18:00:02", "link": True, "driver": "virtio_net"},
    ],
}
RF = {"nics": [{"mac": "52:54:00:18:00:09", "name": "eth0"}],
      "drives": [{"serial_number": "RFDISK1", "size_bytes": 100 << 30, "media_type": "SSD"}]}
BMC_ONLY = {"profile": "default", "state": "inspected", "protected": True,
            "bmc": server(1)["bmc"]}


def _report(hardware: Any = HW, redfish: Any = RF) -> dict[str, Any]:
    return merge(None, "lab-host-01", hardware=hardware_section(hardware) if hardware else None,
                 redfish=redfish_section(redfish) if redfish else None)


def _check(text: str) -> Any:
    """Parse the scaffold back through the inventory validator; its desired host."""
    inventory, problems = parse_inventory(files({"lab-host-01": text}))
    assert problems == [], (problems, text)
    return desired_hosts(inventory)["lab-host-01"]


def test_a_bmc_only_file_becomes_a_reviewed_server_file() -> None:
    text = scaffold("lab-host-01", BMC_ONLY, _report(), subnets=["lab"])
    lines = text.splitlines()
    assert lines[0] == SERVER_MODELINE
    assert any("Review every commented value" in line for line in lines)
    host = _check(text)
    assert host.state == "inspected" and host.protected  # the current file's settings kept
    assert host.bmc.system_id == BMC_ONLY["bmc"]["system_id"]
    # primary: the NIC that had a link; subnet and automatic address: the only subnet
    assert [(i.mac, i.subnet, i.mode) for i in host.interfaces] == [
        ("52:54:00:18:00:02", "lab", "auto")]
    # disk: the smallest non-USB solid-state disk, by WWN (it has one)
    assert host.disk is not None and host.disk.wwn == "0x5000c500a1b2c3d4"
    assert host.architecture == "amd64" and yaml.safe_load(text)["architecture"] == "amd64"
    assert "# other NICs (add any this server should configure): 52:54:00:18:00:01, " \
           "52:54:00:18:00:09" in lines
    assert "#   serial USBSTICK, 8.0 GiB, model unknown, SSD/virtual, USB" in lines
    # the operator's next commit: state provisioned is valid as it stands
    provisioned = text.replace("state: inspected", "state: provisioned")
    assert _check(provisioned).state == "provisioned"


def test_disk_by_serial_without_a_wwn_and_the_bmc_when_there_is_no_in_band_report() -> None:
    hw = {**HW, "disks": [HW["disks"][0]]}
    host = _check(scaffold("lab-host-01", BMC_ONLY, _report(hardware=hw), subnets=["lab"]))
    assert host.disk is not None and host.disk.serial == "LABDISK0001"
    text = scaffold("lab-host-01", BMC_ONLY, _report(hardware=None), subnets=["lab", "other"])
    assert "# before state: provisioned, add subnet: (one of lab, other) and address: auto " \
           "(needs bmc.system_id) or a static address" in text
    host = _check(text)
    assert [i.mac for i in host.interfaces] == ["52:54:00:18:00:09"]  # the BMC's first NIC
    assert host.disk is not None and host.disk.serial == "RFDISK1"
    assert "architecture" not in yaml.safe_load(text)


def test_what_the_report_confirms_is_kept_and_what_it_contradicts_replaced() -> None:
    current = server(1, state="inspected", disk={"serial": "QM00005"}, interfaces=[
        {"name": "eth0", "mac": "52:54:00:18:00:01", "subnet": "lab", "address": "198.18.0.40"},
        {"mac": "52:54:00:77:77:77"}], image={"url": "http://x.invalid/i.qcow2",
                                              "sha256": "b" * 64})
    text = scaffold("lab-host-01", current, _report(), subnets=["lab"])
    assert "# dropped: interfaces[1].mac 52:54:00:77:77:77 is not on the server" in text
    host = _check(text)
    assert [(i.mac, str(i.address)) for i in host.interfaces] == [
        ("52:54:00:18:00:01", "198.18.0.40/24")]
    assert host.disk is not None and host.disk.serial == "QM00005"  # confirmed: kept
    assert host.image is not None and host.image.url == "http://x.invalid/i.qcow2"
    moved = {**current, "disk": {"serial": "GONE"}}
    text = scaffold("lab-host-01", moved, _report(), subnets=["lab"])
    assert "# replaced: {'serial': 'GONE'} is not among the report's hardware disks" in text
    assert _check(text).disk.wwn == "0x5000c500a1b2c3d4"


def test_the_command_prints_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "inv"
    contents = files({"lab-host-01": BMC_ONLY, "lab-host-02": server(2)},
                     extra={"inspection/lab-host-01.yaml": dump(_report())})
    write(root, contents)
    before = sorted((p.relative_to(root).as_posix(), p.read_bytes())
                    for p in root.rglob("*") if p.is_file())
    assert main(["scaffold", "lab-host-01", "--inventory", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == SERVER_MODELINE  # the file had none: the default one
    assert _check(out).interfaces[0].mac == "52:54:00:18:00:02"
    after = sorted((p.relative_to(root).as_posix(), p.read_bytes())
                   for p in root.rglob("*") if p.is_file())
    assert after == before
    assert main(["scaffold", "lab-host-02", "--inventory", str(root)]) == 2
    err = capsys.readouterr().err
    assert "lab-host-02: no inspection report (inspection/lab-host-02.yaml)" in err
    assert "state: inspected" in err  # the hint says how to get one
    assert main(["scaffold", "nope", "--inventory", str(root)]) == 2
    assert "nope: no server file" in capsys.readouterr().err
