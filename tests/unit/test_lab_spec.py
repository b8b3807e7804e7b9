"""The lab's pure parts: host naming, domain XML, daemon configuration, the state file."""

from __future__ import annotations

import ast
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from reconciler.errors import InputError
from reconciler.lab import daemons, lifecycle
from reconciler.lab.domain import DomainFiles, domain_xml
from reconciler.lab.spec import (
    DHCP_END,
    DHCP_START,
    GATEWAY,
    SUBNET,
    LabPaths,
    dnsmasq_argv,
    lab_host,
    lab_hosts,
    parse_leases,
    sushy_config,
)
from reconciler.lab.state import LabState, load, save
from reconciler.model.inventory import load_inventory
from reconciler.paths import example_inventory


def test_lab_hosts_follow_the_shared_constants() -> None:
    h = lab_host(1)
    assert h.name == "lab-host-01"
    assert h.system_id == str(uuid.uuid5(uuid.NAMESPACE_URL, "reconciler-lab/lab-host-01"))
    assert h.mac == "52:54:00:18:00:01"
    assert h.disk_serial == "LABDISK0001"
    assert h.redfish_path == f"/redfish/v1/Systems/{h.system_id}"
    # NN is hex in the MAC and decimal in the serial.
    assert lab_host(10).mac == "52:54:00:18:00:0a"
    assert lab_host(10).disk_serial == "LABDISK0010"
    assert lab_host(254).mac.endswith(":fe")
    assert [x.index for x in lab_hosts(3)] == [1, 2, 3]
    for bad in (0, 255):
        with pytest.raises(ValueError):
            lab_host(bad)


def test_example_inventory_matches_the_lab() -> None:
    inventory, problems = load_inventory(example_inventory())
    assert not problems
    by_mac = {i.mac: s for s in inventory.servers.values() for i in s.interfaces}
    for host in lab_hosts(2):
        server = by_mac[host.mac]
        assert server.bmc.system_id == host.system_id
        assert server.disk is not None and server.disk.serial == host.disk_serial
    subnet = inventory.subnets["lab"]
    assert str(subnet.network) == str(SUBNET)
    assert str(subnet.gateway) == str(GATEWAY)


def _xml(tmp_path: Path, accel: str = "tcg") -> ET.Element:
    host = lab_host(3)
    files = DomainFiles(tmp_path / "d.qcow2", tmp_path / "VARS.fd", tmp_path / "serial.log")
    return ET.fromstring(domain_xml(host, files, accel=accel))


def test_domain_xml_is_uefi_q35_with_serial_disk_and_fixed_mac(tmp_path: Path) -> None:
    dom = _xml(tmp_path)
    assert dom.get("type") == "qemu"
    assert dom.findtext("name") == "lab-host-03"
    assert dom.findtext("uuid") == lab_host(3).system_id
    os_type = dom.find("os/type")
    assert os_type is not None and os_type.get("machine") == "q35"
    loader = dom.find("os/loader")
    assert loader is not None and loader.text == "/usr/share/OVMF/OVMF_CODE_4M.fd"
    assert loader.get("type") == "pflash"
    nvram = dom.find("os/nvram")
    assert nvram is not None and nvram.text == str(tmp_path / "VARS.fd")
    disk = dom.find("devices/disk[@device='disk']")
    assert disk is not None and disk.findtext("serial") == "LABDISK0003"
    target = disk.find("target")
    assert target is not None and target.get("bus") == "virtio"
    nic = dom.find("devices/interface")
    assert nic is not None
    mac = nic.find("mac")
    assert mac is not None and mac.get("address") == "52:54:00:18:00:03"
    source = nic.find("source")
    assert source is not None and source.get("bridge") == "labbr0"
    assert dom.find("devices/disk[@device='cdrom']") is not None
    assert dom.findtext("memory") == "1536" and dom.findtext("vcpu") == "1"


def test_domain_xml_kvm_and_unknown_accel(tmp_path: Path) -> None:
    assert _xml(tmp_path, "kvm").get("type") == "kvm"
    with pytest.raises(KeyError):
        _xml(tmp_path, "hvf")


def test_sushy_config_is_python_pointing_at_4m_ovmf(tmp_path: Path) -> None:
    paths = LabPaths(tmp_path)
    text = sushy_config(paths, tmp_path / "htpasswd", "lab-vmedia")
    namespace: dict[str, object] = {}
    exec(compile(ast.parse(text), "sushy.conf", "exec"), namespace)  # noqa: S102 - our own text
    loader_map = namespace["SUSHY_EMULATOR_BOOT_LOADER_MAP"]
    assert isinstance(loader_map, dict)
    assert loader_map["UEFI"]["x86_64"] == "/usr/share/OVMF/OVMF_CODE_4M.fd"
    assert namespace["SUSHY_EMULATOR_STORAGE_POOL"] == "lab-vmedia"
    assert namespace["SUSHY_EMULATOR_LISTEN_IP"] == "198.18.0.1"
    assert str(paths.libvirt_socket) in str(namespace["SUSHY_EMULATOR_LIBVIRT_URI"])
    assert namespace["SUSHY_EMULATOR_AUTH_FILE"] == str(tmp_path / "htpasswd")


def test_dnsmasq_serves_the_dhcp_range_on_the_bridge_only(tmp_path: Path) -> None:
    argv = dnsmasq_argv(LabPaths(tmp_path))
    assert f"--dhcp-range={DHCP_START},{DHCP_END},255.255.255.0,1h" in argv
    assert "--interface=labbr0" in argv and "--bind-interfaces" in argv
    assert "--no-resolv" in argv  # nothing is forwarded out of the lab
    assert "--keep-in-foreground" in argv


def test_parse_leases() -> None:
    text = (
        "1764100000 52:54:00:18:00:02 198.18.0.150 inspect-1234 01:52:54:00:18:00:02\n"
        "garbage\n"
    )
    assert parse_leases(text) == {"52:54:00:18:00:02": "198.18.0.150"}


def _state(tmp_path: Path) -> LabState:
    return LabState(
        state_dir=str(tmp_path), namespace="reconciler-lab", bridge="labbr0",
        subnet=str(SUBNET), gateway=str(GATEWAY), dns=(str(GATEWAY),),
        dhcp_range=(str(DHCP_START), str(DHCP_END)), bmc_url="http://198.18.0.1:8000",
        credentials="lab-bmc", secrets_file="/x/lab-bmc", service_url="http://198.18.0.1:8080",
        service_running=True, arch="amd64", accel="tcg", libvirt_uri="qemu:///system",
        ssh_key="/x/id", hosts=lab_hosts(2),
    )


def test_state_round_trips_and_is_written_atomically(tmp_path: Path) -> None:
    state = _state(tmp_path)
    path = tmp_path / "lab.yaml"
    save(state, path)
    assert load(path) == state
    assert [p.name for p in tmp_path.iterdir()] == ["lab.yaml"]  # no temporary left behind
    rec = yaml.safe_load(path.read_text())
    assert rec["hosts"][0]["mac"] == "52:54:00:18:00:01"
    assert rec["bmc"] == {"url": "http://198.18.0.1:8000", "credentials": "lab-bmc"}
    assert load(tmp_path / "missing.yaml") is None


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.update(version=99),
        lambda r: r.pop("bmc"),
        lambda r: r["hosts"][0].update(mac="52:54:00:18:00:99"),
    ],
)
def test_state_rejects_a_damaged_file(tmp_path: Path, mutate: object) -> None:
    rec = _state(tmp_path).to_record()
    assert callable(mutate)
    mutate(rec)
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(rec))
    with pytest.raises(InputError, match="lab.yaml"):
        load(path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (lifecycle.UpOptions(hosts=0), "--hosts"),
        (lifecycle.UpOptions(hosts=255), "--hosts"),
        (lifecycle.UpOptions(arch="sparc"), "--arch"),
        (lifecycle.UpOptions(accel="hvf"), "--accel"),
    ],
)
def test_up_rejects_bad_options_before_any_side_effect(
    options: lifecycle.UpOptions, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        lifecycle.check(options)


def test_accel_auto_is_tcg_without_vmx_or_svm() -> None:
    flags = Path("/proc/cpuinfo").read_text()
    has_virt = " vmx" in flags or " svm" in flags
    expected = "kvm" if has_virt and Path("/dev/kvm").exists() else "tcg"
    assert lifecycle.choose_accel("auto") == expected
    assert lifecycle.choose_accel("tcg") == "tcg"


def test_daemon_pidfile_is_trusted_only_for_our_process(tmp_path: Path) -> None:
    import os

    pidfile = tmp_path / "x.pid"
    d = daemons.Daemon("x", pidfile, tmp_path / "x.log", marker="no-such-marker-anywhere")
    assert daemons.read_pid(d) is None
    pidfile.write_text(f"{os.getpid()}\n")
    # Our own pid is alive but its command line does not carry the marker: a reused pid.
    assert daemons.alive(os.getpid())
    assert daemons.read_pid(d) is None
    pidfile.write_text("not a pid")
    assert daemons.read_pid(d) is None
    assert not daemons.stop(d)


def test_libvirt_runs_in_the_lab_namespace_with_private_system_dirs(tmp_path: Path) -> None:
    paths = LabPaths(tmp_path)
    argv = lifecycle.libvirt_wrapper(paths, ["libvirtd", "-f", "/x y/libvirtd.conf"])
    assert argv[:4] == ["ip", "netns", "exec", "reconciler-lab"]
    assert argv[4:9] == ["unshare", "--mount", "--propagation", "private", "--"]
    script = argv[-1]
    for target in ("/etc/libvirt", "/var/lib/libvirt", "/run/libvirt", "/var/log/libvirt",
                   "/var/cache/libvirt"):
        assert f" {target};" in script or f" {target} " in script
    assert f"mount --bind {tmp_path}/libvirt/etc /etc/libvirt" in script
    # The program is exec'd (its pid is the pid file's) and its arguments are quoted.
    assert script.endswith("exec libvirtd -f '/x y/libvirtd.conf'")
