"""What the virtual lab is made of: names, addresses, and the configuration of its daemons.

Pure: data in, text out. The shared lab constants (``/tmp/helper-brief.md``, "Shared
constants") live here and nowhere else; the example inventory is written against them.

The lab sits in a network namespace of its own (RFC 2544 benchmarking range, never routed to
the host): a bridge carrying 198.18.0.1/24, dnsmasq as "whatever DHCP server is on the
network", libvirtd + virtlogd in a private mount namespace (their own /etc/libvirt, /run/libvirt
...), the sushy-tools emulator with its libvirt driver as the BMC, and N UEFI VMs.
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from pathlib import Path

NAMESPACE = "reconciler-lab"
BRIDGE = "labbr0"
# A fixed bridge MAC: a Linux bridge otherwise takes the lowest port MAC, which changes as
# VMs start and stop, and the VMs' ARP caches go stale.
BRIDGE_MAC = "52:54:00:18:00:00"
SUBNET = ipaddress.IPv4Network("198.18.0.0/24")
GATEWAY = ipaddress.IPv4Address("198.18.0.1")
DNS = (GATEWAY,)
DHCP_START = ipaddress.IPv4Address("198.18.0.100")
DHCP_END = ipaddress.IPv4Address("198.18.0.199")
SERVICE_PORT = 8080
SERVICE_TLS_PORT = 8443
BMC_PORT = 8000
SERVICE_URL = f"http://{GATEWAY}:{SERVICE_PORT}"
SERVICE_TLS_URL = f"https://{GATEWAY}:{SERVICE_TLS_PORT}"
BMC_URL = f"http://{GATEWAY}:{BMC_PORT}"
CREDENTIALS_REF = "lab-bmc"
BMC_USERNAME = "admin"
MAX_HOSTS = 0xFE

VCPUS = 1
MEMORY_MIB = 1536
DISK_GIB = 8

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
OVMF_VARS_SECBOOT = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
AAVMF_CODE = Path("/usr/share/AAVMF/AAVMF_CODE.fd")

# Architectures the lab can build VMs for: libvirt arch, machine type, emulator binary.
ARCHES: dict[str, tuple[str, str, str]] = {
    "amd64": ("x86_64", "q35", "/usr/bin/qemu-system-x86_64"),
}


@dataclass(frozen=True, slots=True)
class LabHost:
    """One lab VM, everything an inventory needs to know about it."""

    index: int
    name: str
    system_id: str
    mac: str
    disk_serial: str

    @property
    def redfish_path(self) -> str:
        return f"/redfish/v1/Systems/{self.system_id}"


def lab_host(index: int) -> LabHost:
    """Lab host ``index`` (1-based) named and addressed as the shared constants say."""
    if not 1 <= index <= MAX_HOSTS:
        raise ValueError(f"lab host index {index} outside 1..{MAX_HOSTS}")
    name = f"lab-host-{index:02d}"
    return LabHost(
        index=index,
        name=name,
        system_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"reconciler-lab/{name}")),
        mac=f"52:54:00:18:00:{index:02x}",
        disk_serial=f"LABDISK{index:04d}",
    )


def lab_hosts(count: int) -> tuple[LabHost, ...]:
    return tuple(lab_host(i) for i in range(1, count + 1))


@dataclass(frozen=True, slots=True)
class LabPaths:
    """Where a lab keeps its files; everything ``up`` creates lives under ``root``.

    ``cache`` survives ``down``: libvirt's QEMU capability cache there saves ~12 s per ``up``.
    """

    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "lab.yaml"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "log"

    @property
    def vms(self) -> Path:
        return self.root / "vms"

    @property
    def pool(self) -> Path:
        return self.root / "pool"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def libvirt(self) -> Path:
        """The private tree bind-mounted over libvirt's system directories."""
        return self.root / "libvirt"

    @property
    def libvirt_socket(self) -> Path:
        return self.libvirt / "run" / "libvirt-sock"

    @property
    def libvirt_uri(self) -> str:
        return f"qemu:///system?socket={self.libvirt_socket}"

    def pidfile(self, daemon: str) -> Path:
        return self.run / f"{daemon}.pid"

    def logfile(self, daemon: str) -> Path:
        return self.logs / f"{daemon}.log"

    def disk(self, host: LabHost) -> Path:
        return self.vms / f"{host.name}.qcow2"

    def nvram(self, host: LabHost) -> Path:
        return self.vms / f"{host.name}_VARS.fd"

    def serial_log(self, host: LabHost) -> Path:
        return self.vms / f"{host.name}.serial.log"


# libvirt's system directories and the subdirectory of LabPaths.libvirt mounted over each.
LIBVIRT_MOUNTS: tuple[tuple[str, str], ...] = (
    ("etc", "/etc/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("run", "/run/libvirt"),
    ("log", "/var/log/libvirt"),
)
LIBVIRT_CACHE_MOUNT = "/var/cache/libvirt"

# Without user/group root every define re-probes QEMU for 60-150 s (LAB.md); there is no
# AppArmor/SELinux or cgroup delegation in these containers, and QEMU's private /dev
# namespace fails without CAP_SYS_ADMIN in the right places.
QEMU_CONF = """\
# Written by `reconciler lab up`; bind-mounted over /etc/libvirt in libvirtd's mount namespace.
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
stdio_handler = "logd"
"""

LIBVIRTD_CONF = """\
# Written by `reconciler lab up`: a local socket for root only, no TCP, no TLS.
unix_sock_group = "root"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
listen_tls = 0
listen_tcp = 0
"""

VIRTLOGD_CONF = """\
# Written by `reconciler lab up`.
max_clients = 64
"""


def sushy_config(paths: LabPaths, auth_file: Path, pool: str) -> str:
    """The emulator's config file (plain Python, read by ``flask.Config.from_pyfile``)."""
    loader_map = {
        "UEFI": {"x86_64": str(OVMF_CODE), "aarch64": str(AAVMF_CODE)},
        "Legacy": {"x86_64": None, "aarch64": None},
    }
    lines = [
        "# Written by `reconciler lab up`.",
        f"SUSHY_EMULATOR_LISTEN_IP = {str(GATEWAY)!r}",
        f"SUSHY_EMULATOR_LISTEN_PORT = {BMC_PORT}",
        f"SUSHY_EMULATOR_LIBVIRT_URI = {paths.libvirt_uri!r}",
        f"SUSHY_EMULATOR_AUTH_FILE = {str(auth_file)!r}",
        f"SUSHY_EMULATOR_STORAGE_POOL = {pool!r}",
        # Debian names no secboot OVMF_CODE.secboot.fd (the emulator's default): point UEFI
        # x86_64 at the 4M build the VMs are defined with.
        f"SUSHY_EMULATOR_BOOT_LOADER_MAP = {loader_map!r}",
        f"SUSHY_EMULATOR_SECURE_BOOT_DISABLED_NVRAM = {str(OVMF_VARS)!r}",
        f"SUSHY_EMULATOR_SECURE_BOOT_ENABLED_NVRAM = {str(OVMF_VARS_SECBOOT)!r}",
        f"SUSHY_EMULATOR_STATE_DIR = {str(paths.run / 'sushy-state')!r}",
        "SUSHY_EMULATOR_VMEDIA_VERIFY_SSL = False",
        "SUSHY_EMULATOR_IGNORE_BOOT_DEVICE = False",
    ]
    return "\n".join(lines) + "\n"


def dnsmasq_argv(paths: LabPaths) -> list[str]:
    """dnsmasq serving DHCP (and DNS for the lab only) on the bridge, in the foreground."""
    mask = SUBNET.netmask
    return [
        "dnsmasq",
        "--conf-file=/dev/null",
        "--keep-in-foreground",
        "--log-facility=-",
        "--log-dhcp",
        f"--interface={BRIDGE}",
        "--bind-interfaces",
        "--except-interface=lo",
        f"--listen-address={GATEWAY}",
        f"--dhcp-range={DHCP_START},{DHCP_END},{mask},1h",
        f"--dhcp-option=option:router,{GATEWAY}",
        f"--dhcp-option=option:dns-server,{','.join(str(a) for a in DNS)}",
        "--dhcp-authoritative",
        f"--dhcp-leasefile={paths.run / 'dnsmasq.leases'}",
        # DNS for names in the lab only: nothing is forwarded anywhere.
        "--no-resolv",
        "--no-hosts",
        "--user=root",
        "--group=root",
        "--pid-file=",
    ]


def parse_leases(text: str) -> dict[str, str]:
    """MAC -> IPv4 address from a dnsmasq lease file (``expiry mac ip name clientid``)."""
    leases: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            leases[fields[1].lower()] = fields[2]
    return leases
