"""The ephemeral OS's own scripts (dhcp-discover, checkin, hw-inventory), run on the host
against temporary directories and a real loopback HTTP server."""

from __future__ import annotations

import http.server
import importlib.machinery
import importlib.util
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from reconciler.engine import remote
from reconciler.paths import images_dir

BIN = images_dir() / "ephemeral/rootfs/usr/local/bin"
ROOTFS = images_dir() / "ephemeral/rootfs"


def _script(name: str) -> ModuleType:
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), str(BIN / name))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_dhcp_discover_does_nothing_with_a_network_config(tmp_path: Path) -> None:
    dhcp = _script("dhcp-discover")
    seed = tmp_path / "var/lib/cloud/seed/nocloud"
    seed.mkdir(parents=True)
    (seed / "network-config").write_text("version: 2\n")
    assert dhcp.discover(tmp_path) == []
    assert not (tmp_path / "run").exists()


def test_dhcp_discover_matches_every_physical_nic(tmp_path: Path) -> None:
    dhcp = _script("dhcp-discover")
    written = dhcp.discover(tmp_path)
    network = (tmp_path / "run/systemd/network/90-dhcp-discover.network").read_text()
    assert "Type=ether" in network and "Kind=!*" in network and "DHCP=ipv4" in network
    cfg = yaml.safe_load((tmp_path / "etc/cloud/cloud.cfg.d/99-dhcp-discover.cfg").read_text())
    assert cfg == {"network": {"config": "disabled"}}
    assert len(written) == 2


def test_dhcp_discover_unit_is_skipped_by_a_network_config() -> None:
    unit = (ROOTFS / "etc/systemd/system/dhcp-discover.service").read_text()
    assert "ConditionPathExists=!/var/lib/cloud/seed/nocloud/network-config" in unit
    assert "Before=cloud-init-local.service systemd-networkd.service" in unit


IP_JSON = json.dumps([
    {"ifname": "lo", "flags": ["LOOPBACK", "UP"],
     "addr_info": [{"family": "inet", "local": "127.0.0.1"}]},
    {"ifname": "eth0", "flags": ["BROADCAST", "UP"],
     "addr_info": [{"family": "inet", "local": "198.18.0.123", "prefixlen": 24}]},
    {"ifname": "eth1", "flags": ["BROADCAST", "UP"],
     "addr_info": [{"family": "inet", "local": "10.1.2.3"},
                   {"family": "inet6", "local": "fe80::1"}]},
])


def test_checkin_addresses_skip_loopback() -> None:
    checkin = _script("checkin")
    assert checkin.addresses_from_ip_json(IP_JSON) == ["198.18.0.123", "10.1.2.3"]
    assert checkin.addresses_from_ip_json("") == []


class _Recorder(http.server.BaseHTTPRequestHandler):
    statuses: list[int] = []
    bodies: list[Any] = []

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(type(self).statuses.pop(0))
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Handler", (_Recorder,), {"statuses": [503, 404, 204], "bodies": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v1/checkins/abc", handler
    finally:
        server.shutdown()
        server.server_close()


def test_checkin_puts_until_204(
    tmp_path: Path, recorder: tuple[str, type[_Recorder]], monkeypatch: pytest.MonkeyPatch
) -> None:
    checkin = _script("checkin")
    url, handler = recorder
    (tmp_path / "checkin-url").write_text(url + "\n")
    monkeypatch.setattr(checkin, "current_addresses", lambda: ["198.18.0.123"])
    assert checkin.run(tmp_path, interval=0.01, max_attempts=10) == 0
    assert handler.bodies == [{"addresses": ["198.18.0.123"]}] * 3


def test_checkin_without_url_is_a_no_op(tmp_path: Path) -> None:
    assert _script("checkin").run(tmp_path, interval=0, max_attempts=1) == 0


def test_checkin_unreachable_service_is_retried(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    checkin = _script("checkin")
    (tmp_path / "checkin-url").write_text("http://127.0.0.1:9/x")  # discard port: refused
    monkeypatch.setattr(checkin, "current_addresses", lambda: ["198.18.0.5"])
    assert checkin.run(tmp_path, interval=0.01, max_attempts=2) == 1


LSBLK = json.dumps({"blockdevices": [
    {"name": "vda", "path": "/dev/vda", "type": "disk", "size": 4294967296,
     "serial": "LABDISK0001", "wwn": None, "model": None, "vendor": "0x1af4", "rota": False,
     "tran": None},
    {"name": "sda", "path": "/dev/sda", "type": "disk", "size": 1000204886016,
     "serial": "S3Z9NB0K1 ", "wwn": "0x5002538e40a1b2c3", "model": "Samsung SSD 860 ",
     "vendor": "ATA     ", "rota": True, "tran": "sata"},
    {"name": "loop0", "path": "/dev/loop0", "type": "loop", "size": 1},
    {"name": "sr0", "path": "/dev/sr0", "type": "rom", "size": 1},
]})


def test_hw_inventory_output_passes_the_engine_validation(tmp_path: Path) -> None:
    inv = _script("hw-inventory")
    links = {"vda": ["/dev/disk/by-id/virtio-LABDISK0001"],
             "sda": ["/dev/disk/by-id/ata-Samsung_SSD_860_S3Z9NB0K1",
                     "/dev/disk/by-id/wwn-0x5002538e40a1b2c3"]}
    sys_root = tmp_path / "sys"
    nic = sys_root / "class/net/eth0"
    (sys_root / "devices/pci0000:00/0000:00:03.0/driver_dir/virtio_net").mkdir(parents=True)
    device = sys_root / "devices/pci0000:00/0000:00:03.0"
    nic.mkdir(parents=True)
    (nic / "device").symlink_to(device)
    (device / "driver").symlink_to(device / "driver_dir/virtio_net")
    for name, value in (("address", "52:54:00:18:00:01"), ("carrier", "1"),
                        ("operstate", "up"), ("speed", "-1"), ("mtu", "1500")):
        (nic / name).write_text(value + "\n")
    (sys_root / "class/net/lo").mkdir()  # no device link: virtual, skipped
    (sys_root / "class/dmi/id").mkdir(parents=True)
    (sys_root / "class/dmi/id/sys_vendor").write_text("QEMU\n")
    cpuinfo = "processor\t: 0\nmodel name\t: QEMU Virtual CPU\nflags\t: fpu sse\n\n" \
              "processor\t: 1\nmodel name\t: QEMU Virtual CPU\n"
    data = {
        "id": "abc",
        "system": inv.system(sys_root),
        "cpus": inv.cpus(cpuinfo),
        "memory": inv.memory("MemTotal:        1505208 kB\n"),
        "disks": inv.disks(LSBLK, links),
        "nics": inv.nics(sys_root),
    }
    parsed = remote.parse_hw_inventory(json.dumps(data))
    assert parsed.system["vendor"] == "QEMU"
    assert parsed.cpu_count == 2 and parsed.memory_bytes == 1505208 * 1024
    assert [(d.name, d.serial, d.wwn) for d in parsed.disks] == [
        ("vda", "LABDISK0001", None), ("sda", "S3Z9NB0K1", "0x5002538e40a1b2c3")]
    assert parsed.disks[1].by_id == tuple(links["sda"])
    assert [(n.name, n.mac, n.link, n.driver) for n in parsed.nics] == [
        ("eth0", "52:54:00:18:00:01", True, "virtio_net")]


def test_cloud_init_config_is_nocloud_with_the_cut_module_list() -> None:
    cfg = yaml.safe_load((ROOTFS / "etc/cloud/cloud.cfg").read_text())
    assert cfg["datasource_list"] == ["NoCloud"]
    modules = cfg["cloud_init_modules"] + cfg["cloud_config_modules"] + cfg["cloud_final_modules"]
    assert set(modules) <= {"seed_random", "set_hostname", "update_hostname", "update_etc_hosts",
                            "resolv_conf", "users_groups", "ssh", "runcmd", "scripts_user",
                            "final_message"}
    sshd = (ROOTFS / "etc/ssh/sshd_config.d/50-ephemeral.conf").read_text()
    assert "PermitRootLogin prohibit-password" in sshd and "PasswordAuthentication no" in sshd


def test_checkin_trusts_the_injected_ca_bundle(tmp_path: Path) -> None:
    import ssl

    from tests.fixtures.service import make_tls

    tls = make_tls(tmp_path)
    handler = type("Handler", (_Recorder,), {"statuses": [204, 204], "bodies": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert, tls.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        checkin = _script("checkin")
        url = f"https://127.0.0.1:{server.server_address[1]}/api/v1/checkins/abc"
        # Without the injected CA the service's certificate is not trusted: no PUT lands.
        assert checkin.put(url, ["198.18.0.7"], tmp_path / "absent.pem", timeout=5) == 0
        assert checkin.put(url, ["198.18.0.7"], tls.ca, timeout=5) == 204
        assert handler.bodies == [{"addresses": ["198.18.0.7"]}]
    finally:
        server.shutdown()
        server.server_close()
