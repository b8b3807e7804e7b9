"""Real boots of the ephemeral OS: UKI from the base artifacts + overlay, QEMU + OVMF, TCG.

Proofs (issue 4):

1. provisioning overlay (meta-data, user-data, static network-config matched by MAC,
   /root/.ssh/authorized_keys with 0700 directories): SSH as root works and
   /var/lib/cloud/data/instance-id matches;
2. inspection overlay (no network-config, a checkin-url): DHCP comes up and the checkin PUT
   reaches the project's own checkin API (``reconciler serve``);
3. hw-inventory shows the disk serial given to QEMU and the NIC's MAC;
4. from inside the ephemeral OS: the target image is downloaded, checked and written onto a
   virtio disk, its root partition found by GPT type GUID, the NoCloud seed written; after a
   power cycle the installed OS comes up on the seeded static address with SSH.

Each proof runs for amd64 (OVMF) and arm64 (AAVMF, emulated with TCG as well).

Networking is QEMU user networking with ``restrict=on``: the guest reaches nothing but the
forwards the test sets up (SSH in via ``hostfwd`` on 127.0.0.1; the checkin service and the
image server out via ``guestfwd`` to loopback ports of this test).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import http.server
import json
import socketserver
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
import requests

from reconciler.adapters import ssh
from reconciler.artifacts.pipeline import build_artifacts
from reconciler.artifacts.request import parse_build_request
from reconciler.engine import remote
from reconciler.errors import ReconcilerError
from tests.fixtures.base_images import BaseImages, ensure_base_images
from tests.fixtures.qemu import Disk, Nic, QemuVM
from tests.fixtures.service import free_port, running_service

# The first test also pays for a cold build of the base images (~6 min on a busy 2-core box).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

ARCHES = ("amd64", "arm64")
MAC = "52:54:00:18:00:01"  # lab host 1 (shared constant)
SERIAL = "LABDISK0001"
SCSI_SERIAL = "LABSCSI0001"  # a second disk on virtio-scsi, which also reports a WWN
WWN = "0x5000c500aabbccdd"
STATIC_IP = "10.0.2.50"  # inside QEMU's user network 10.0.2.0/24
GATEWAY = "10.0.2.2"
FORWARD_IP = "10.0.2.100"  # guestfwd address: the checkin service / the image server
MEMORY_MIB = 1536
# Deadlines, not sleeps: TCG on a shared 2-core machine (arm64 is emulated on amd64 hosts).
BOOT_TIMEOUT = {"amd64": 600.0, "arm64": 1500.0}
TIMINGS: dict[str, float] = {}

# One process per guest connection (QEMU's guestfwd "cmd:"), relaying the connection
# (stdin/stdout) to a loopback port of this test.
RELAY = """\
import os, socket, sys, threading
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def up():
    while True:
        data = os.read(0, 65536)
        if not data:
            s.shutdown(socket.SHUT_WR)
            return
        s.sendall(data)
threading.Thread(target=up, daemon=True).start()
while True:
    data = s.recv(65536)
    if not data:
        break
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]
"""


@dataclass
class Guest:
    vm: QemuVM
    ssh_port: int
    key: asyncssh.SSHKey
    instance_id: str


def _b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def _key() -> tuple[asyncssh.SSHKey, str]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    return key, key.export_public_key().decode().strip()


def _user_data(public_key: str) -> str:
    return (
        "#cloud-config\n"
        "disable_root: false\n"
        f"ssh_authorized_keys:\n  - {public_key}\n"
    )


def _network_config(ip: str) -> str:
    # The route as templates/network-config.j2 spells it: both images run Debian's unpatched
    # cloud-init 22.4, which rejects "to: default".
    return (
        "version: 2\n"
        "ethernets:\n"
        "  eth0:\n"
        "    match:\n"
        f"      macaddress: \"{MAC}\"\n"
        "    addresses:\n"
        f"      - \"{ip}/24\"\n"
        "    routes:\n"
        "      - to: 0.0.0.0/0\n"
        f"        via: \"{GATEWAY}\"\n"
    )


def _meta_data(instance_id: str) -> str:
    return f"instance-id: {instance_id}\nlocal-hostname: host-{instance_id[:8]}\n"


def _uki(base: BaseImages, out: Path, files: dict[str, str], public_key: str) -> Path:
    """The real pipeline: base artifacts + CPIO overlay -> UKI (what the service builds)."""
    seed = "/var/lib/cloud/seed/nocloud/"
    entries = [
        {"path": seed + name, "contentBase64": _b64(text), "mode": "0644"}
        for name, text in files.items()
    ]
    entries.append(
        {"path": "/root/.ssh/authorized_keys", "contentBase64": _b64(public_key + "\n"),
         "mode": "0600"}
    )
    entries.append({"path": "/usr/local/bin/python", "linkTarget": "/usr/bin/python3"})
    req = parse_build_request({
        "kernel": f"vmlinuz-{base.arch}",
        "initramfs": f"initramfs-{base.arch}.img",
        "cmdline": str(base.manifest["cmdline"]),  # the build's own (serial console per arch)
        "architecture": base.arch,
        "files": entries,
        "dirOverrides": [{"path": "/root", "mode": "0700"}, {"path": "/root/.ssh", "mode": "0700"}],
    })
    return build_artifacts(req, kernel=base.kernel, initramfs=base.initramfs, out_dir=out).uki


def _netdev(workdir: Path, ssh_port: int, guest_ip: str, forward_port: int | None) -> str:
    netdev = f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-{guest_ip}:22"
    if forward_port is not None:
        relay = workdir / "relay.py"
        relay.write_text(RELAY)
        netdev += f",guestfwd=tcp:{FORWARD_IP}:80-cmd:{sys.executable} {relay} {forward_port}"
    return netdev


def _run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def _session(port: int, key: asyncssh.SSHKey, deadline: float) -> ssh.Connection:
    return await ssh.wait_for_ssh("127.0.0.1", key=key, port=port, deadline=deadline)


def _wait_ssh(vm: QemuVM, port: int, key: asyncssh.SSHKey, timeout: float) -> float:
    """Seconds from now until SSH accepted our key and ran a command; fails with the console."""
    started = time.monotonic()

    async def probe() -> None:
        async with await _session(port, key, started + timeout) as conn:
            await conn.run("true", timeout=30)

    try:
        asyncio.run(probe())
    except ReconcilerError as exc:
        pytest.fail(f"{vm.name}: {exc}\n--- serial tail ---\n{vm.console()[-4000:]}")
    return time.monotonic() - started


def _on(port: int, key: asyncssh.SSHKey, step):  # type: ignore[no-untyped-def]
    """Run ``step(conn)`` on a fresh SSH connection."""

    async def go():  # type: ignore[no-untyped-def]
        async with await _session(port, key, time.monotonic() + 60) as conn:
            return await step(conn)

    return asyncio.run(go())


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module", params=ARCHES)
def base_images(request: pytest.FixtureRequest) -> BaseImages:
    """The base images of one architecture; every test below runs once per architecture."""
    return ensure_base_images(request.param)


@pytest.fixture(scope="module")
def image_server(base_images: BaseImages) -> Iterator[int]:
    """Serve the target image directory on a loopback port (the guest reaches it by guestfwd)."""
    handler = functools.partial(_QuietHandler, directory=str(base_images.target_image.parent))
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def provisioned(
    base_images: BaseImages, image_server: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Guest]:
    """The ephemeral OS booted from a provisioning UKI, with a blank virtio disk to install to."""
    arch = base_images.arch
    workdir = tmp_path_factory.mktemp(f"provision-{arch}")
    key, public = _key()
    instance_id = str(uuid.uuid4())
    uki = _uki(base_images, workdir / "artifacts", {
        "meta-data": _meta_data(instance_id),
        "user-data": _user_data(public),
        "network-config": _network_config(STATIC_IP),
    }, public)
    disk, scsi = workdir / "disk.raw", workdir / "scsi.raw"
    for path, size in ((disk, 4 * 1024**3), (scsi, 1024**3)):
        with open(path, "wb") as handle:
            handle.truncate(size)
    port = free_port()
    vm = QemuVM(
        workdir, arch=arch, memory_mib=MEMORY_MIB, uki=uki, name="ephemeral",
        disks=[Disk(path=disk, serial=SERIAL), Disk(path=scsi, serial=SCSI_SERIAL, wwn=WWN)],
        nics=[Nic(mac=MAC, netdev=_netdev(workdir, port, STATIC_IP, image_server))],
    )  # fmt: skip
    with vm:
        TIMINGS[f"{arch} provision boot->ssh"] = _wait_ssh(vm, port, key, BOOT_TIMEOUT[arch])
        yield Guest(vm=vm, ssh_port=port, key=key, instance_id=instance_id)


def test_ssh_as_root_and_instance_id_matches(provisioned: Guest, base_images: BaseImages) -> None:
    got = _on(provisioned.ssh_port, provisioned.key, remote.read_instance_id)
    assert got == provisioned.instance_id
    # The seeded static address is on the NIC matched by MAC (proof the network-config applied).
    out = _on(provisioned.ssh_port, provisioned.key,
              lambda c: c.run("ip -4 -j addr show", timeout=30))
    addresses = [a["local"] for link in json.loads(out.stdout) for a in link["addr_info"]]
    assert STATIC_IP in addresses
    # Host keys are per boot: ed25519 present, made at this boot (no keys in the base image).
    keys = _on(provisioned.ssh_port, provisioned.key,
               lambda c: c.run("ls /etc/ssh/", timeout=30)).stdout
    assert "ssh_host_ed25519_key" in keys
    # Root's SSH directories kept 0700 through the overlay.
    modes = _on(provisioned.ssh_port, provisioned.key,
                lambda c: c.run("stat -c %a /root /root/.ssh", timeout=30)).stdout.split()
    assert modes == ["700", "700"]
    # The kernel and userland are the architecture asked for.
    machine = _on(provisioned.ssh_port, provisioned.key,
                  lambda c: c.run("uname -m; dpkg --print-architecture", timeout=30)).stdout
    assert machine.split() == [{"amd64": "x86_64", "arm64": "aarch64"}[base_images.arch],
                               base_images.arch]
    took = TIMINGS[f"{base_images.arch} provision boot->ssh"]
    print(f"{base_images.arch} boot->SSH (provisioning overlay): {took:.1f} s")


def test_hw_inventory_shows_disk_serial_and_mac(provisioned: Guest) -> None:
    inventory = _on(provisioned.ssh_port, provisioned.key,
                    lambda c: remote.hw_inventory(c, provisioned.instance_id))
    assert inventory.inspection_id == provisioned.instance_id
    disks = {d.serial: d for d in inventory.disks}
    assert SERIAL in disks, inventory.raw["disks"]
    assert f"/dev/disk/by-id/virtio-{SERIAL}" in disks[SERIAL].by_id
    assert disks[SERIAL].size_bytes == 4 * 1024**3
    assert SCSI_SERIAL in disks, inventory.raw["disks"]
    assert disks[SCSI_SERIAL].wwn == WWN
    assert f"/dev/disk/by-id/wwn-{WWN}" in disks[SCSI_SERIAL].by_id
    by_wwn = _on(provisioned.ssh_port, provisioned.key, lambda c: remote.find_disk(c, wwn=WWN))
    assert by_wwn == f"/dev/disk/by-id/wwn-{WWN}"
    by_serial = _on(provisioned.ssh_port, provisioned.key,
                    lambda c: remote.find_disk(c, serial=SCSI_SERIAL))
    assert by_serial == f"/dev/disk/by-id/wwn-{WWN}"  # udev names WWN disks by WWN only
    macs = {n.mac: n for n in inventory.nics}
    assert MAC in macs, inventory.raw["nics"]
    assert macs[MAC].driver == "virtio_net"
    assert macs[MAC].link is True
    assert inventory.memory_bytes > 1024**3
    assert inventory.cpu_count >= 1
    # The tools the design lists are in the image.
    tools = "qemu-img sgdisk parted lvm mdadm mkfs.ext4 mkfs.xfs mkfs.vfat curl python3 ip"
    out = _on(provisioned.ssh_port, provisioned.key,
              lambda c: c.run(f"for t in {tools}; do command -v $t >/dev/null || echo MISSING $t;"
                              " done; lsblk -o PARTTYPE >/dev/null && echo ok", timeout=30))
    assert out.stdout.strip() == "ok", out.stdout


def test_install_target_image_and_boot_it(
    provisioned: Guest, base_images: BaseImages, tmp_path: Path
) -> None:
    arch = base_images.arch
    image_url = f"http://{FORWARD_IP}/{base_images.target_image.name}"
    installed_id = provisioned.instance_id
    _, public = provisioned.key, provisioned.key.export_public_key().decode().strip()

    async def install(conn: ssh.Connection) -> str:
        await remote.verify_instance_id(conn, provisioned.instance_id)
        device = await remote.find_disk(conn, serial=SERIAL)
        assert device == f"/dev/disk/by-id/virtio-{SERIAL}"
        started = time.monotonic()
        await remote.write_image(conn, image_url, base_images.target_sha256, device)
        TIMINGS[f"{arch} write image"] = time.monotonic() - started
        partition = await remote.find_root_partition(conn, device, arch)
        await remote.seed_nocloud(
            conn, partition, _meta_data(installed_id), _user_data(public),
            _network_config(STATIC_IP),
        )
        # Power off so the next boot is a cold one from the disk (QEMU runs -no-reboot).
        await conn.run("systemctl --no-block poweroff", timeout=30, check=False)
        return partition

    partition = _on(provisioned.ssh_port, provisioned.key, install)
    assert partition == "/dev/vda2"
    assert provisioned.vm.wait_exit(timeout=120) == 0

    disk = provisioned.vm.workdir / "disk.raw"
    port = free_port()
    vm = QemuVM(
        tmp_path, arch=arch, memory_mib=MEMORY_MIB, name="installed",
        disks=[Disk(path=disk, serial=SERIAL)],
        nics=[Nic(mac=MAC, netdev=_netdev(tmp_path, port, STATIC_IP, None))],
    )  # fmt: skip
    with vm:
        TIMINGS[f"{arch} installed boot->ssh"] = _wait_ssh(vm, port, provisioned.key,
                                                           BOOT_TIMEOUT[arch])
        got = _on(port, provisioned.key, remote.read_instance_id)
        assert got == installed_id
        root = _on(port, provisioned.key,
                   lambda c: c.run("findmnt -n -o SOURCE /", timeout=30)).stdout.strip()
        assert root == "/dev/vda2"
        out = _on(port, provisioned.key, lambda c: c.run("ip -4 -j addr show", timeout=30))
        addresses = [a["local"] for link in json.loads(out.stdout) for a in link["addr_info"]]
        assert STATIC_IP in addresses
    print(f"{arch} write image: {TIMINGS[f'{arch} write image']:.1f} s; "
          f"installed OS boot->SSH: {TIMINGS[f'{arch} installed boot->ssh']:.1f} s")


def test_inspection_dhcp_and_checkin(
    base_images: BaseImages, tmp_path: Path
) -> None:
    arch = base_images.arch
    key, public = _key()
    inspect_id = str(uuid.uuid4())
    with running_service(tmp_path / "service", images=base_images.images_dir) as svc:
        checkin = f"{svc.url}/api/v1/checkins/{inspect_id}"
        assert requests.post(checkin, json={"addresses": []}, timeout=10).status_code == 204
        uki = _uki(base_images, tmp_path / "artifacts", {
            "meta-data": _meta_data(inspect_id),
            "user-data": _user_data(public),
            "checkin-url": f"http://{FORWARD_IP}/api/v1/checkins/{inspect_id}\n",
        }, public)
        port = free_port()
        dhcp_ip = "10.0.2.15"  # the first address QEMU's DHCP server hands out
        vm = QemuVM(
            tmp_path, arch=arch, memory_mib=MEMORY_MIB, uki=uki, name="inspect",
            nics=[Nic(mac=MAC, netdev=_netdev(tmp_path, port, dhcp_ip, svc.port))],
        )  # fmt: skip
        with vm:
            started = time.monotonic()
            deadline = started + BOOT_TIMEOUT[arch]
            addresses: list[str] = []
            while time.monotonic() < deadline:
                record = requests.get(checkin, timeout=10).json()
                addresses = record.get("addresses", [])
                if addresses:
                    break
                time.sleep(2)  # polling the service with a deadline
            TIMINGS[f"{arch} inspection boot->checkin"] = time.monotonic() - started
            assert addresses == [dhcp_ip], vm.console()[-4000:]
            assert _on(port, key, remote.read_instance_id) == inspect_id
            # DHCP came from dhcp-discover's networkd file, not from a network-config.
            out = _on(port, key, lambda c: c.run(
                "networkctl status --no-pager 2>/dev/null | head -0; "
                "ls /run/systemd/network/; systemctl is-active dhcp-discover checkin",
                timeout=30, check=False)).stdout
            assert "90-dhcp-discover.network" in out
            assert out.split()[-2:] == ["active", "inactive"]  # checkin exited after its 204
    print(f"{arch} inspection boot->checkin: "
          f"{TIMINGS[f'{arch} inspection boot->checkin']:.1f} s")
