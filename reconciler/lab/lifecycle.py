"""``lab up``, ``lab down``, ``lab status``: build, tear down and inspect the virtual lab.

Order of ``up`` (each step checked before the next; ``up`` after a crash tears the remains
down first, so it is idempotent):

1. a network namespace with a bridge carrying the gateway address (nothing on the host);
2. virtlogd and libvirtd inside it, each in a private mount namespace whose /etc/libvirt,
   /var/lib/libvirt, /run/libvirt, /var/log/libvirt, /var/cache/libvirt are directories of
   the lab: the host's libvirt configuration and state are never touched, and QEMU runs as
   root (else every define re-probes QEMU for minutes, LAB.md);
3. a storage pool for virtual media and one UEFI domain per lab host;
4. dnsmasq on the bridge (DHCP range only: it stands for "whatever DHCP server is there");
5. the BMC password in the secrets directory and the sushy-tools emulator with its libvirt
   driver under gunicorn, basic auth, on the gateway address;
6. optionally the build service (``reconciler serve``) on the gateway address;
7. the state file, last: its presence means the lab is complete.
"""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.adapters import secrets as creds
from reconciler.adapters.buildclient import BuildClient
from reconciler.adapters.redfish.client import BmcEndpoint, ClientSettings
from reconciler.adapters.redfish.driver import Bmc
from reconciler.adapters.run import run, which
from reconciler.errors import InputError, PermanentError, ReconcilerError, ToolFailed, ToolMissing
from reconciler.lab import daemons, gitops, netns
from reconciler.lab.daemons import Daemon
from reconciler.lab.domain import DomainFiles, domain_xml
from reconciler.lab.spec import (
    ARCHES,
    BMC_URL,
    BMC_USERNAME,
    BRIDGE,
    BRIDGE_MAC,
    CREDENTIALS_REF,
    DHCP_END,
    DHCP_START,
    DISK_GIB,
    DNS,
    GATEWAY,
    LIBVIRT_CACHE_MOUNT,
    LIBVIRT_MOUNTS,
    LIBVIRTD_CONF,
    MAX_HOSTS,
    NAMESPACE,
    OVMF_CODE,
    OVMF_VARS,
    QEMU_CONF,
    SERVICE_URL,
    SUBNET,
    VIRTLOGD_CONF,
    LabHost,
    LabPaths,
    dnsmasq_argv,
    lab_hosts,
    parse_leases,
    sushy_config,
)
from reconciler.lab.state import LabState, load, save, write_atomic
from reconciler.log import register_secret
from reconciler.paths import project_root

LOG = logging.getLogger(__name__)

POOL = "lab-vmedia"
# Stop order: clients before the daemons they talk to.
DAEMONS = ("service", "sushy", "dnsmasq", "libvirtd", "virtlogd")
_VIRSH_TIMEOUT = 120.0
_READY_TIMEOUT = 180.0


def default_state_dir() -> Path:
    return project_root() / "var" / "lab"


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """Run the build service in the lab, with base artifacts from ``images``: as ``reconciler
    run`` on the lab's inventory repository (``reconcile``; its servers starting in
    ``states``), or bare (``reconciler serve``, for hand-driven boots). Either way the lab's
    target image is published on it and the inventory repository is made
    (:mod:`reconciler.lab.gitops`)."""

    images: Path
    reconcile: bool = True
    states: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class UpOptions:
    hosts: int = 2
    arch: str = "amd64"
    accel: str = "auto"
    secrets_dir: Path | None = None
    service: ServiceOptions | None = None


def daemon(paths: LabPaths, name: str) -> Daemon:
    return Daemon(name, paths.pidfile(name), paths.logfile(name), marker=str(paths.root))


# ---------------------------------------------------------------- checks before side effects


REQUIRED_TOOLS = (
    "ip", "dnsmasq", "libvirtd", "virtlogd", "virsh", "qemu-img", "start-stop-daemon", "unshare",
    "ssh", "ssh-keygen",
)


def check(options: UpOptions) -> str:
    """Validate options and the machine; return the accelerator to use."""
    if not 1 <= options.hosts <= MAX_HOSTS:
        raise InputError(f"--hosts: {options.hosts} is outside 1..{MAX_HOSTS}")
    if options.arch not in ARCHES:
        raise InputError(f"--arch: {options.arch!r} is not one of {', '.join(ARCHES)}")
    if options.accel not in ("auto", "tcg", "kvm"):
        raise InputError(f"--accel: {options.accel!r} is not one of auto, tcg, kvm")
    if os.geteuid() != 0:
        raise PermanentError("the lab needs root (network namespaces, libvirtd, QEMU)")
    for tool in REQUIRED_TOOLS:
        which(tool)
    for firmware in (OVMF_CODE, OVMF_VARS):
        if not firmware.exists():
            raise ToolMissing(f"{firmware} not found", hint="install ovmf")
    if not Path(ARCHES[options.arch][2]).exists():
        raise ToolMissing(f"{ARCHES[options.arch][2]} not found", hint="install qemu-system-x86")
    return choose_accel(options.accel)


def choose_accel(wanted: str) -> str:
    """KVM only where it really works: the CPU shows VMX/SVM *and* OVMF boots under it.

    On these machines /dev/kvm is a software nested hypervisor (PVM): QEMU starts, then
    aborts in OVMF's first instructions (MSR 0x10a), so the flags alone are not enough."""
    if wanted != "auto":
        return wanted
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "tcg"
    has_virt = " vmx" in flags or " svm" in flags
    if not (has_virt and Path("/dev/kvm").exists()):
        return "tcg"
    return "kvm" if kvm_boots_ovmf() else "tcg"


def kvm_boots_ovmf(timeout: float = 8.0) -> bool:
    """Boot OVMF under KVM for ``timeout`` s: does its boot manager speak on the serial port?"""
    with tempfile.TemporaryDirectory(prefix="lab-kvm-probe.") as tmp:
        vars_copy, serial = Path(tmp) / "VARS.fd", Path(tmp) / "serial.log"
        shutil.copyfile(OVMF_VARS, vars_copy)
        argv = [
            "qemu-system-x86_64", "-machine", "q35", "-accel", "kvm", "-cpu", "host",
            "-m", "256", "-display", "none", "-nodefaults", "-no-reboot",
            "-serial", f"file:{serial}",
            "-drive", f"if=pflash,format=raw,unit=0,file={OVMF_CODE},readonly=on",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
        ]
        # OVMF never exits by itself: the timeout ends the probe, and what it printed decides.
        deadline = time.monotonic() + timeout
        try:
            run(argv, timeout=timeout, check=False)
        except ToolFailed:
            pass
        ok = b"BdsDxe" in serial.read_bytes() if serial.exists() else False
        LOG.info("KVM probe: OVMF %s under KVM (%.1f s)", "boots" if ok else "fails",
                 timeout - max(0.0, deadline - time.monotonic()))
        return ok


# ---------------------------------------------------------------- up


def up(paths: LabPaths, options: UpOptions) -> LabState:
    accel = check(options)
    if load_quietly(paths) is not None or netns.exists(NAMESPACE) or any_pidfile(paths):
        LOG.info("cleaning up the remains of a previous lab first")
        down(paths)
    hosts = lab_hosts(options.hosts)
    try:
        for d in (paths.run, paths.logs, paths.vms, paths.pool, paths.cache):
            d.mkdir(parents=True, exist_ok=True)
        netns.create(
            NAMESPACE, bridge=BRIDGE, bridge_mac=BRIDGE_MAC,
            address=f"{GATEWAY}/{SUBNET.prefixlen}",
        )
        start_libvirt(paths)
        define_pool(paths)
        for host in hosts:
            define_host(paths, host, arch=options.arch, accel=accel)
        daemons.start(
            daemon(paths, "dnsmasq"), [*netns.exec_prefix(NAMESPACE), *dnsmasq_argv(paths)]
        )
        secrets_file = write_bmc_secret(paths, options.secrets_dir)
        ssh_key = make_ssh_key(paths)
        start_sushy(paths, hosts)
        service = options.service
        if service is not None:
            url, sha256 = gitops.publish_target(paths, service.images, options.arch)
            gitops.make_inventory_repo(paths, url, sha256, service.states)
            if service.reconcile:
                config = gitops.write_run_config(paths, service.images, secrets_file.parent)
                start_service(paths, gitops.reconciler_argv(config))
            else:
                start_service(paths, gitops.serve_argv(paths, service.images))
        state = LabState(
            state_dir=str(paths.root),
            namespace=NAMESPACE,
            bridge=BRIDGE,
            subnet=str(SUBNET),
            gateway=str(GATEWAY),
            dns=tuple(str(a) for a in DNS),
            dhcp_range=(str(DHCP_START), str(DHCP_END)),
            bmc_url=BMC_URL,
            credentials=CREDENTIALS_REF,
            secrets_file=str(secrets_file),
            service_url=SERVICE_URL,
            service_running=options.service is not None,
            arch=options.arch,
            accel=accel,
            libvirt_uri=paths.libvirt_uri,
            ssh_key=str(ssh_key),
            hosts=hosts,
            inventory_repo=str(gitops.inventory_repo(paths)) if service else "",
            reconciler_data=str(gitops.reconciler_data(paths))
            if service and service.reconcile else "",
        )
        save(state, paths.state_file)
        return state
    except BaseException:
        LOG.error("lab up failed; tearing down what it made")
        try:
            down(paths)
        except Exception as exc:  # noqa: BLE001 - the first error is the one to report
            LOG.error("teardown after the failure also failed: %s", exc)
        raise


def load_quietly(paths: LabPaths) -> LabState | None:
    try:
        return load(paths.state_file)
    except InputError:
        return None


def any_pidfile(paths: LabPaths) -> bool:
    return paths.run.exists() and any(paths.run.glob("*.pid"))


def libvirt_wrapper(paths: LabPaths, program: Sequence[str]) -> list[str]:
    """``program`` in the lab's network namespace and a private mount namespace in which
    libvirt's system directories are the lab's own."""
    mounts = [(paths.libvirt / sub, target) for sub, target in LIBVIRT_MOUNTS]
    mounts.append((paths.cache / "libvirt", LIBVIRT_CACHE_MOUNT))
    steps = []
    for source, target in mounts:
        steps.append(f"mkdir -p {shlex.quote(target)}")
        steps.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(target)}")
    steps.append("exec " + shlex.join(program))
    return [
        *netns.exec_prefix(NAMESPACE),
        "unshare", "--mount", "--propagation", "private", "--",
        "sh", "-ec", "; ".join(steps),
    ]


def start_libvirt(paths: LabPaths) -> None:
    for sub, _ in LIBVIRT_MOUNTS:
        (paths.libvirt / sub).mkdir(parents=True, exist_ok=True)
    (paths.cache / "libvirt").mkdir(parents=True, exist_ok=True)
    etc = paths.libvirt / "etc"
    write_atomic(etc / "qemu.conf", QEMU_CONF)
    write_atomic(etc / "libvirtd.conf", LIBVIRTD_CONF)
    write_atomic(etc / "virtlogd.conf", VIRTLOGD_CONF)
    daemons.start(
        daemon(paths, "virtlogd"),
        libvirt_wrapper(paths, ["virtlogd", "-f", str(etc / "virtlogd.conf")]),
    )
    pid = daemons.start(
        daemon(paths, "libvirtd"),
        libvirt_wrapper(paths, ["libvirtd", "-f", str(etc / "libvirtd.conf")]),
    )
    deadline = time.monotonic() + _READY_TIMEOUT
    while True:
        # The pid itself, not read_pid(): while the wrapper execs (ip netns exec -> unshare ->
        # sh -> libvirtd) /proc/PID/cmdline can read empty for an instant, and read_pid()
        # would then call a starting libvirtd gone.
        if not daemons.alive(pid):
            raise ToolFailed(f"libvirtd exited: {daemons.log_tail(daemon(paths, 'libvirtd'))}")
        if paths.libvirt_socket.exists():
            proc = virsh(paths, ["version"], check=False)
            if proc.returncode == 0:
                return
        if time.monotonic() > deadline:
            raise ToolFailed(f"libvirtd not answering after {_READY_TIMEOUT:g} s")
        time.sleep(0.2)


def virsh(
    paths: LabPaths, args: Sequence[str], *, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    return run(["virsh", "-q", "-c", paths.libvirt_uri, *args], timeout=_VIRSH_TIMEOUT, check=check)


def define_pool(paths: LabPaths) -> None:
    virsh(paths, ["pool-define-as", POOL, "dir", "--target", str(paths.pool)])
    virsh(paths, ["pool-start", POOL])


def define_host(paths: LabPaths, host: LabHost, *, arch: str, accel: str) -> None:
    disk = paths.disk(host)
    run(["qemu-img", "create", "-q", "-f", "qcow2", disk, f"{DISK_GIB}G"], timeout=60)
    files = DomainFiles(disk=disk, nvram=paths.nvram(host), serial_log=paths.serial_log(host))
    xml_path = paths.vms / f"{host.name}.xml"
    write_atomic(xml_path, domain_xml(host, files, arch=arch, accel=accel))
    virsh(paths, ["define", str(xml_path)])


def write_bmc_secret(paths: LabPaths, directory: Path | None) -> Path:
    """A fresh random BMC password: ``username:password`` in the secrets directory (for the
    reconciler) and a bcrypt htpasswd file in the lab (for the emulator)."""
    import bcrypt  # sushy-tools' own dependency, used only for its auth file

    password = secrets.token_urlsafe(18)
    register_secret(password)
    target = creds.secrets_dir(directory) / CREDENTIALS_REF
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(target, f"{BMC_USERNAME}:{password}\n", mode=0o600)
    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=6)).decode()
    write_atomic(paths.run / "htpasswd", f"{BMC_USERNAME}:{digest}\n", mode=0o600)
    write_atomic(paths.run / "secrets-file", f"{target}\n", mode=0o600)
    return target


def make_ssh_key(paths: LabPaths) -> Path:
    """The lab's own SSH key pair: builds for lab hosts authorize its public half."""
    key = paths.root / "ssh" / "id_ed25519"
    key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "reconciler-lab", "-f", key],
            timeout=30)
    return key


def start_sushy(paths: LabPaths, hosts: Sequence[LabHost]) -> None:
    config = paths.run / "sushy.conf"
    write_atomic(config, sushy_config(paths, paths.run / "htpasswd", POOL))
    tmp = paths.run / "sushy-tmp"
    tmp.mkdir(exist_ok=True)
    # One worker: the libvirt driver keeps HttpBootUri in process memory. Threads serve the
    # slow calls (InsertMedia downloads the whole image) without blocking GETs.
    argv = [
        *netns.exec_prefix(NAMESPACE), sys.executable, "-m", "gunicorn",
        "--bind", f"{GATEWAY}:{BMC_URL.rsplit(':', 1)[1]}",
        "--workers", "1", "--threads", "8", "--timeout", "600",
        "--worker-tmp-dir", str(tmp), "--access-logfile", "-",
        "sushy_tools.emulator.main:app",
    ]
    env = {"SUSHY_EMULATOR_CONFIG": str(config), "TMPDIR": str(tmp)}
    pid = daemons.start(daemon(paths, "sushy"), argv, env=env)
    creds_ = creds.resolve(CREDENTIALS_REF, directory=secrets_dir_of(paths))
    url = f"{BMC_URL}/redfish/v1/Systems"
    endpoint = BmcEndpoint(BMC_URL, creds_.username, creds_.password,
                           system_id=hosts[0].system_id)
    settings = ClientSettings(connect_timeout=2, read_timeout=10, get_attempts=1)

    def systems() -> int:
        with Bmc(endpoint, settings) as bmc:
            return int(bmc.get_json("/redfish/v1/Systems").get("Members@odata.count", -1))

    deadline = time.monotonic() + _READY_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        if not daemons.alive(pid):  # not read_pid(): see start_libvirt
            tail = daemons.log_tail(daemon(paths, "sushy"))
            raise ToolFailed(f"the Redfish emulator exited: {tail}")
        try:
            count = netns.call_in_netns(NAMESPACE, systems)
            if count == len(hosts):
                return
            last = f"{count} systems, expected {len(hosts)}"
        except ReconcilerError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise ToolFailed(f"the Redfish emulator is not ready at {url}: {last}")


def secrets_dir_of(paths: LabPaths) -> Path:
    return Path((paths.run / "secrets-file").read_text().strip()).parent


def start_service(paths: LabPaths, service_argv: Sequence[str]) -> None:
    argv = [*netns.exec_prefix(NAMESPACE), *service_argv]
    pid = daemons.start(daemon(paths, "service"), argv)
    url = f"{SERVICE_URL}/healthz"
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if not daemons.alive(pid):  # not read_pid(): see start_libvirt
            tail = daemons.log_tail(daemon(paths, "service"))
            raise ToolFailed(f"the build service exited: {tail}")
        if netns.call_in_netns(NAMESPACE, BuildClient(SERVICE_URL, timeout=5).healthy):
            return
        time.sleep(0.3)
    raise ToolFailed(f"the build service is not answering at {url}")


# ---------------------------------------------------------------- down


def down(paths: LabPaths) -> list[str]:
    """Remove everything ``up`` made (whatever state it got to); return what was removed."""
    removed: list[str] = []
    if daemons.read_pid(daemon(paths, "libvirtd")) is not None:
        listed = virsh(paths, ["list", "--name"], check=False)
        for name in listed.stdout.decode().split():
            virsh(paths, ["destroy", name], check=False)
            removed.append(f"domain {name}")
    for name in DAEMONS:
        if daemons.stop(daemon(paths, name)):
            removed.append(name)
    # Whatever still runs in the namespace (QEMU left behind by a killed libvirtd, a daemon
    # whose pid file was lost) is ours: nothing else is ever started in it.
    leftovers = netns.pids(NAMESPACE)
    if leftovers:
        daemons.terminate(leftovers)
        removed.append(f"{len(leftovers)} leftover processes")
    if netns.exists(NAMESPACE):
        netns.delete(NAMESPACE)
        removed.append(f"network namespace {NAMESPACE}")
    secret_pointer = paths.run / "secrets-file"
    if secret_pointer.exists():
        Path(secret_pointer.read_text().strip()).unlink(missing_ok=True)
        removed.append("BMC credentials")
    for child in ("run", "log", "vms", "pool", "libvirt", "ssh", "service", "lab.yaml",
                  "serve.yaml", "boot",
                  gitops.PUBLISHED, gitops.RUN_CONFIG, gitops.RECONCILER_DATA,
                  gitops.INVENTORY_REPO):
        target = paths.root / child
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    return removed


# ---------------------------------------------------------------- status


@dataclass(frozen=True, slots=True)
class Status:
    state: LabState | None
    daemons: dict[str, int | None]
    namespace: bool
    domains: dict[str, str]
    leases: dict[str, str]

    @property
    def healthy(self) -> bool:
        if self.state is None or not self.namespace:
            return False
        wanted = [d for d in DAEMONS if d != "service" or self.state.service_running]
        return all(self.daemons.get(d) is not None for d in wanted)


def status(paths: LabPaths) -> Status:
    state = load(paths.state_file)
    pids = {name: daemons.read_pid(daemon(paths, name)) for name in DAEMONS}
    domains: dict[str, str] = {}
    if pids["libvirtd"] is not None and state is not None:
        for host in state.hosts:
            proc = virsh(paths, ["domstate", host.name], check=False)
            domains[host.name] = proc.stdout.decode().strip() or "unknown"
    leases_file = paths.run / "dnsmasq.leases"
    leases = parse_leases(leases_file.read_text()) if leases_file.exists() else {}
    return Status(state, pids, netns.exists(NAMESPACE), domains, leases)
