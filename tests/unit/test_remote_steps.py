"""The SSH steps of inspection and provisioning against a fake shell fed recorded output.

The fake implements the same ``Shell`` protocol as the asyncssh connection; the real one is
exercised by tests/integration/test_images_boot.py against the booted ephemeral OS.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from reconciler.adapters.ssh import Result
from reconciler.engine import remote
from reconciler.errors import InputError, PermanentError

# The shape udev gives /dev/disk/by-id in the ephemeral OS under QEMU (a virtio disk with
# serial LABDISK0001, a virtio-scsi disk with serial SCSI01 and WWN 0x5000c500aabbccdd: with a
# WWN, udev names SCSI disks after the WWN only); the integration test finds such disks by
# serial and by WWN in a real boot.
BY_ID_LINKS = """\
/dev/disk/by-id/scsi-35000c500aabbccdd /dev/sda
/dev/disk/by-id/virtio-LABDISK0001 /dev/vda
/dev/disk/by-id/virtio-LABDISK0001-part1 /dev/vda1
/dev/disk/by-id/virtio-LABDISK0001-part2 /dev/vda2
/dev/disk/by-id/virtio-LABDISK00012 /dev/vdb
/dev/disk/by-id/wwn-0x5000c500aabbccdd /dev/sda
"""
LSBLK_IDS = json.dumps({"blockdevices": [
    {"path": "/dev/sda", "serial": "SCSI01", "wwn": "0x5000c500aabbccdd"},
    {"path": "/dev/vda", "serial": "LABDISK0001", "wwn": None},
    {"path": "/dev/vdb", "serial": "LABDISK00012", "wwn": None},
]})
BY_ID = BY_ID_LINKS + "--- lsblk\n" + LSBLK_IDS

LSBLK = json.dumps({"blockdevices": [{
    "path": "/dev/vda", "parttype": None, "children": [
        {"path": "/dev/vda1", "parttype": "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"},
        {"path": "/dev/vda2", "parttype": "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"},
    ]}]})

SHA = "a" * 64


@dataclass
class FakeShell:
    """Answers commands by the first matching regular expression; records what ran."""

    answers: list[tuple[str, Callable[[str], Result] | str]]
    host: str = "198.18.0.10"
    ran: list[tuple[str, bytes | None]] = field(default_factory=list)

    async def run(self, command: str, *, timeout: float, input: bytes | None = None,
                  check: bool = True) -> Result:
        self.ran.append((command, input))
        for pattern, answer in self.answers:
            if re.search(pattern, command):
                result = answer(command) if callable(answer) else Result(command, 0, answer, "")
                if check and result.exit_status != 0:
                    raise PermanentError(f"`{command}` exited with status {result.exit_status}")
                return result
        return Result(command, 0, "", "")


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_find_disk_by_serial_ignores_partitions_and_longer_serials() -> None:
    shell = FakeShell([("readlink", BY_ID)])
    assert run(remote.find_disk(shell, serial="LABDISK0001")) == \
        "/dev/disk/by-id/virtio-LABDISK0001"
    # No by-id name carries a WWN-reporting SCSI disk's serial: found through lsblk instead.
    assert run(remote.find_disk(shell, serial="SCSI01")) == \
        "/dev/disk/by-id/wwn-0x5000c500aabbccdd"


def test_find_disk_by_wwn_in_any_spelling() -> None:
    shell = FakeShell([("readlink", BY_ID)])
    for wwn in ("0x5000c500aabbccdd", "5000C500AABBCCDD", "naa.5000c500aabbccdd"):
        assert run(remote.find_disk(shell, wwn=wwn)) == "/dev/disk/by-id/wwn-0x5000c500aabbccdd"


def test_find_disk_errors_name_what_was_sought() -> None:
    shell = FakeShell([("readlink", BY_ID)])
    with pytest.raises(PermanentError, match="no disk with serial NOPE under /dev/disk/by-id"):
        run(remote.find_disk(shell, serial="NOPE"))
    with pytest.raises(InputError, match="serial or a WWN"):
        run(remote.find_disk(shell))
    two = BY_ID_LINKS + "/dev/disk/by-id/ata-OTHER_LABDISK0001 /dev/sdz\n--- lsblk\n" + LSBLK_IDS
    with pytest.raises(PermanentError, match="matches several disks: /dev/sdz, /dev/vda"):
        run(remote.find_disk(FakeShell([("readlink", two)]), serial="LABDISK0001"))
    with pytest.raises(PermanentError, match="line 1 is not"):
        run(remote.find_disk(FakeShell([("readlink", "garbage\n--- lsblk\n{}")]), serial="X"))
    with pytest.raises(PermanentError, match="`lsblk -J -d -o PATH,SERIAL,WWN` output missing"):
        run(remote.find_disk(FakeShell([("readlink", BY_ID_LINKS)]), serial="X"))
    with pytest.raises(PermanentError, match="`lsblk -J -d -o PATH,SERIAL,WWN` did not print"):
        run(remote.find_disk(FakeShell([("readlink", BY_ID_LINKS + "--- lsblk\n[")]),
                             serial="X"))


def test_find_root_partition_by_type_guid() -> None:
    shell = FakeShell([("lsblk", LSBLK)])
    assert run(remote.find_root_partition(shell, "/dev/disk/by-id/virtio-LABDISK0001",
                                          "amd64")) == "/dev/vda2"
    assert shell.ran[0][0] == "lsblk -J -o PATH,PARTTYPE /dev/disk/by-id/virtio-LABDISK0001"
    with pytest.raises(PermanentError, match="no partition of type b921b045"):
        run(remote.find_root_partition(shell, "/dev/vda", "arm64"))
    with pytest.raises(InputError, match="architecture 'riscv64'"):
        run(remote.find_root_partition(shell, "/dev/vda", "riscv64"))
    with pytest.raises(PermanentError, match="`lsblk -J -o PATH,PARTTYPE /dev/vda` did not"):
        run(remote.find_root_partition(FakeShell([("lsblk", "{")]), "/dev/vda", "amd64"))


def test_write_image_verifies_then_converts_then_fixes_gpt() -> None:
    shell = FakeShell([
        ("sha256sum", f"{SHA}  /tmp/reconciler-image\n"),
        ("qemu-img info", json.dumps({"format": "qcow2", "virtual-size": 1})),
    ])
    run(remote.write_image(shell, "http://10.0.2.100/debian.qcow2", SHA.upper(), "/dev/vda"))
    commands = [c for c, _ in shell.ran]
    order = ["remount", "curl -fsSL", "sha256sum", "qemu-img info", "qemu-img convert -f qcow2",
             "rm -f", "sgdisk -e /dev/vda", "partprobe"]
    assert [next(i for i, c in enumerate(commands) if step in c) for step in order] == \
        list(range(len(order)))


def test_write_image_refuses_a_wrong_checksum_and_cleans_up() -> None:
    shell = FakeShell([("sha256sum", "b" * 64 + "  /tmp/reconciler-image\n")])
    with pytest.raises(PermanentError, match="does not match"):
        run(remote.write_image(shell, "http://h/i.qcow2", SHA, "/dev/vda"))
    commands = [c for c, _ in shell.ran]
    assert not any("qemu-img convert" in c for c in commands)
    assert any(c.startswith("rm -f") for c in commands)


def test_write_image_checks_its_inputs_first() -> None:
    shell = FakeShell([])
    with pytest.raises(InputError, match="sha256"):
        run(remote.write_image(shell, "http://h/i", "abc", "/dev/vda"))
    with pytest.raises(InputError, match="not http"):
        run(remote.write_image(shell, "file:///etc/passwd", SHA, "/dev/vda"))
    with pytest.raises(InputError, match="not a /dev path"):
        run(remote.write_image(shell, "http://h/i", SHA, "/dev/vda; reboot"))
    assert shell.ran == []


def test_seed_nocloud_writes_files_and_always_unmounts() -> None:
    shell = FakeShell([])
    run(remote.seed_nocloud(shell, "/dev/vda2", "instance-id: x\n", "#cloud-config\n",
                            "version: 2\n"))
    written = {c.split()[2]: data for c, data in shell.ran if c.startswith("cat >")}
    seed = "/mnt/target/var/lib/cloud/seed/nocloud/"
    assert written == {seed + "meta-data.tmp": b"instance-id: x\n",
                       seed + "user-data.tmp": b"#cloud-config\n",
                       seed + "network-config.tmp": b"version: 2\n"}
    assert shell.ran[0][0] == "mkdir -p /mnt/target && mount /dev/vda2 /mnt/target"
    assert shell.ran[-1][0] == "umount /mnt/target"

    def fail(command: str) -> Result:
        return Result(command, 1, "", "No space left on device")

    failing = FakeShell([("^cat >", fail)])
    with pytest.raises(PermanentError):
        run(remote.seed_nocloud(failing, "/dev/vda2", "m", "u"))
    assert failing.ran[-1][0] == "umount /mnt/target"


def test_instance_id_checks() -> None:
    shell = FakeShell([("instance-id", "3f1c-uuid\n")])
    assert run(remote.read_instance_id(shell)) == "3f1c-uuid"
    run(remote.verify_instance_id(shell, "3f1c-uuid"))
    with pytest.raises(PermanentError, match="not the booted server"):
        run(remote.verify_instance_id(shell, "other"))
    with pytest.raises(PermanentError, match="not one instance id"):
        run(remote.read_instance_id(FakeShell([("instance-id", "")])))


INVENTORY = {
    "id": "abc", "system": {"vendor": "QEMU", "serial": None},
    "cpus": {"logical": 1}, "memory": {"totalBytes": 1505208320},
    "disks": [{"name": "vda", "path": "/dev/vda", "serial": "LABDISK0001", "wwn": None,
               "sizeBytes": 4294967296, "byId": ["/dev/disk/by-id/virtio-LABDISK0001"]}],
    "nics": [{"name": "enp0s2", "mac": "52:54:00:18:00:01", "link": True,
              "driver": "virtio_net"}],
}


def test_hw_inventory_parsed() -> None:
    shell = FakeShell([("hw-inventory", json.dumps(INVENTORY))])
    inv = run(remote.hw_inventory(shell, "abc"))
    assert shell.ran[0][0] == "/usr/local/bin/hw-inventory abc"
    assert inv.disks[0].serial == "LABDISK0001" and inv.nics[0].mac == "52:54:00:18:00:01"


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.pop("nics"), r"inventory.nics is missing"),
    (lambda d: d["disks"][0].update(sizeBytes="4G"), r"disks\[0\].sizeBytes has the wrong type"),
    (lambda d: d["nics"][0].update(mac="zz"), r"nics\[0\].mac 'zz' is not a MAC"),
    (lambda d: d["nics"][0].update(link="yes"), r"nics\[0\].link has the wrong type"),
    (lambda d: d["cpus"].update(logical=True), r"cpus.logical has the wrong type"),
])
def test_hw_inventory_bad_output_names_command_and_field(mutate, message) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(json.dumps(INVENTORY))
    mutate(data)
    shell = FakeShell([("hw-inventory", json.dumps(data))])
    with pytest.raises(PermanentError, match=r"`/usr/local/bin/hw-inventory abc`: " + message):
        run(remote.hw_inventory(shell, "abc"))


def test_hw_inventory_not_json() -> None:
    shell = FakeShell([("hw-inventory", "Traceback (most recent call last):")])
    with pytest.raises(PermanentError, match="`/usr/local/bin/hw-inventory` did not print JSON"):
        run(remote.hw_inventory(shell))


def test_find_disk_by_an_nvme_eui_wwn_as_the_report_writes_it() -> None:
    from reconciler.engine.remote import choose_disk, parse_lsblk_identities

    identities = parse_lsblk_identities(
        '{"blockdevices": [{"path": "/dev/nvme0n1", "serial": "S4X", '
        '"wwn": "eui.0025385b71b0a1c2"}]}', "lsblk")
    links = {"/dev/disk/by-id/nvme-eui.0025385b71b0a1c2": "/dev/nvme0n1",
             "/dev/disk/by-id/nvme-Samsung_S4X": "/dev/nvme0n1"}
    found = choose_disk(links, serial=None, wwn="0025385b71b0a1c2", identities=identities)
    assert found.startswith("/dev/disk/by-id/nvme-")
