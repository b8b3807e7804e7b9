"""The lab state file: what ``lab up`` built, as YAML an inventory can be written from.

Dataclasses in memory, a plain mapping on disk (``to_record``/``from_record``), written to a
temporary name in the same directory and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reconciler.errors import InputError
from reconciler.lab.spec import LabHost, lab_host

STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class LabState:
    state_dir: str
    namespace: str
    bridge: str
    subnet: str
    gateway: str
    dns: tuple[str, ...]
    dhcp_range: tuple[str, str]
    bmc_url: str
    credentials: str
    secrets_file: str
    service_url: str
    service_running: bool
    arch: str
    accel: str
    libvirt_uri: str
    ssh_key: str
    hosts: tuple[LabHost, ...]
    # With the reconciler running (lab up --images without --service-only):
    inventory_repo: str = ""  # the bare repository `reconciler run` follows
    reconciler_data: str = ""  # its data directory (`reconciler status --data-dir`)

    def to_record(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "state_dir": self.state_dir,
            "namespace": self.namespace,
            "bridge": self.bridge,
            "subnet": self.subnet,
            "gateway": self.gateway,
            "dns": list(self.dns),
            "dhcp_range": {"start": self.dhcp_range[0], "end": self.dhcp_range[1]},
            "bmc": {"url": self.bmc_url, "credentials": self.credentials},
            "secrets_file": self.secrets_file,
            "build_service": {"url": self.service_url, "running": self.service_running},
            "arch": self.arch,
            "accel": self.accel,
            "libvirt_uri": self.libvirt_uri,
            "ssh_key": self.ssh_key,
            "reconciler": {"inventory_repo": self.inventory_repo,
                           "data_dir": self.reconciler_data},
            "hosts": [
                {
                    "name": h.name,
                    "index": h.index,
                    "system_id": h.system_id,
                    "redfish_path": h.redfish_path,
                    "mac": h.mac,
                    "disk_serial": h.disk_serial,
                }
                for h in self.hosts
            ],
        }

    @classmethod
    def from_record(cls, rec: Any, source: str) -> LabState:
        try:
            if rec.get("version") != STATE_VERSION:
                raise InputError(f"{source}: version: expected {STATE_VERSION}")
            hosts = tuple(lab_host(int(h["index"])) for h in rec["hosts"])
            for h, raw in zip(hosts, rec["hosts"], strict=True):
                if raw["system_id"] != h.system_id or raw["mac"] != h.mac:
                    raise InputError(f"{source}: hosts[{h.index - 1}] does not match lab host")
            return cls(
                state_dir=str(rec["state_dir"]),
                namespace=str(rec["namespace"]),
                bridge=str(rec["bridge"]),
                subnet=str(rec["subnet"]),
                gateway=str(rec["gateway"]),
                dns=tuple(str(a) for a in rec["dns"]),
                dhcp_range=(str(rec["dhcp_range"]["start"]), str(rec["dhcp_range"]["end"])),
                bmc_url=str(rec["bmc"]["url"]),
                credentials=str(rec["bmc"]["credentials"]),
                secrets_file=str(rec["secrets_file"]),
                service_url=str(rec["build_service"]["url"]),
                service_running=bool(rec["build_service"]["running"]),
                arch=str(rec["arch"]),
                accel=str(rec["accel"]),
                libvirt_uri=str(rec["libvirt_uri"]),
                ssh_key=str(rec["ssh_key"]),
                hosts=hosts,
                inventory_repo=str((rec.get("reconciler") or {}).get("inventory_repo", "")),
                reconciler_data=str((rec.get("reconciler") or {}).get("data_dir", "")),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise InputError(f"{source}: not a lab state file ({exc!r})") from None


def write_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(state: LabState, path: Path) -> None:
    write_atomic(path, yaml.safe_dump(state.to_record(), sort_keys=False))


def load(path: Path) -> LabState | None:
    """The state in ``path``, None when there is none; InputError when it is unreadable."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        rec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not YAML: {exc}") from None
    return LabState.from_record(rec, str(path))
