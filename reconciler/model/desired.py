"""DesiredHost: one server with its profile applied and its addresses assigned.

The reconcile engine consumes this; its digests say what a change needs:

- ``build``: inputs of the ephemeral-OS image (kernel, initramfs, cmdline, architecture, seed
  data). When it changes the provisioning image must be rebuilt; the disk is not touched.
- ``provision``: what ends up on the target disk (image, disk, network identity, cloud-init
  seed). When it changes on a provisioned server, the server must be reprovisioned: its disk
  is wiped.
- ``spec``: everything, including BMC and desired state.
- ``inspect``: what an inspection depends on (``inspect_generation``, the ephemeral OS's boot
  inputs, the BMC identity; not the SSH keys or the target image): a server in
  ``state: inspected`` is inspected again when it changes (:attr:`DesiredHost.inspect_digest`).

Which fields feed which digest is :data:`reconciler.model.impact.FIELD_EFFECTS`.

Digests cover the inventory's own template overrides but not the project's templates/, so an
upgrade of the reconciler never silently reprovisions a fleet.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from reconciler.model.bulk import paused_gc
from reconciler.model.impact import BUILD_FIELDS, INSPECT_FIELDS, PROVISION_FIELDS
from reconciler.model.inventory import Bmc, Disk, Image, Inventory, Server


@dataclass(frozen=True, slots=True)
class NetworkInterface:
    name: str
    mac: str
    mode: str  # static | auto | dhcp
    subnet: str | None = None
    address: IPv4Interface | None = None  # address/prefix, None for dhcp
    gateway: IPv4Address | None = None  # primary interface only
    nameservers: tuple[IPv4Address, ...] = ()
    primary: bool = False


@dataclass(frozen=True, slots=True)
class Digests:
    spec: str
    build: str
    provision: str
    inspect: str = ""


@dataclass(frozen=True, slots=True)
class DesiredHost:
    name: str
    file: str
    state: str
    protected: bool
    suspend: bool
    architecture: str
    bmc: Bmc
    boot_method: str
    kernel: str
    initramfs: str
    cmdline: str
    interfaces: tuple[NetworkInterface, ...]
    disk: Disk | None
    image: Image | None
    ssh_keys: tuple[str, ...]
    user_data: Mapping[str, Any]
    templates_digest: str
    digests: Digests
    inspect_generation: int = 0

    @property
    def inspect_digest(self) -> str:
        """Digest of the inspection inputs: a report answers the host it was collected for
        only while this is the same (see :data:`reconciler.model.impact.INSPECT_FIELDS`)."""
        return self.digests.inspect

    @property
    def address(self) -> IPv4Address | None:
        """Where the reconciler reaches the server: the primary interface's address."""
        for iface in self.interfaces:
            if iface.primary and iface.address is not None:
                return iface.address.ip
        return None

    def to_record(self) -> dict[str, Any]:
        """JSON-ready view (also what the digests and ``reconciler plan`` compare)."""
        return _record(self)


def _thaw(value: Any) -> Any:
    if type(value) is str:  # the common leaf; skips the Mapping ABC check
        return value
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_thaw(v) for v in value]
    return value


def merge_user_data(*parts: Mapping[str, Any]) -> dict[str, Any]:
    """cloud-config merge: mappings merge recursively, lists append, scalars replace."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in _thaw(part).items():
            old = out.get(key)
            if isinstance(old, dict) and isinstance(value, dict):
                out[key] = merge_user_data(old, value)
            elif isinstance(old, list) and isinstance(value, list):
                out[key] = old + value
            else:
                out[key] = value
    return out


def _iface_record(i: NetworkInterface) -> dict[str, Any]:
    return {
        "name": i.name,
        "mac": i.mac,
        "mode": i.mode,
        "subnet": i.subnet,
        "address": str(i.address) if i.address else None,
        "gateway": str(i.gateway) if i.gateway else None,
        "nameservers": [str(a) for a in i.nameservers],
        "primary": i.primary,
    }


def _record(h: DesiredHost, *, with_digests: bool = True) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "name": h.name,
        "file": h.file,
        "state": h.state,
        "protected": h.protected,
        "suspend": h.suspend,
        "architecture": h.architecture,
        "bmc": {
            "address": h.bmc.address,
            "system_id": h.bmc.system_id,
            "credentials": h.bmc.credentials,
            "verify_tls": h.bmc.verify_tls,
            "ca_bundle": h.bmc.ca_bundle,
        },
        "boot_method": h.boot_method,
        "kernel": h.kernel,
        "initramfs": h.initramfs,
        "cmdline": h.cmdline,
        "interfaces": [_iface_record(i) for i in h.interfaces],
        "disk": {"serial": h.disk.serial, "wwn": h.disk.wwn} if h.disk else None,
        "image": {"url": h.image.url, "sha256": h.image.sha256} if h.image else None,
        "ssh_keys": list(h.ssh_keys),
        "user_data": _thaw(h.user_data),
        "templates_digest": h.templates_digest,
        "inspect_generation": h.inspect_generation,
    }
    if with_digests:
        rec["digests"] = {"spec": h.digests.spec, "build": h.digests.build,
                          "provision": h.digests.provision, "inspect": h.digests.inspect}
    return rec


# One encoder for every digest: json.dumps(..., sort_keys=True, separators=(",", ":"),
# default=str) builds a new JSONEncoder per call, which costs more than encoding a small value.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)
# encode() also makes a new C encoder on every call; make the one it would make, once (markers
# None: no cycle check, the records are trees). Pure-Python builds lack it and use encode().
_C_CANONICAL: Any = (
    c_make_encoder(None, str, encode_basestring_ascii, None, ":", ",", True, False, True)
    if c_make_encoder is not None else None
)


def _encode(value: Any) -> str:
    """``_CANONICAL.encode(value)``, with the encoder's own shortcuts for scalars taken here."""
    if type(value) is str:
        return encode_basestring_ascii(value)
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if _C_CANONICAL is not None:
        return "".join(_C_CANONICAL(value, 0))
    return _CANONICAL.encode(value)


def _digests(rec: Mapping[str, Any], bmc_identity: Mapping[str, Any]) -> Digests:
    """sha256 of canonical JSON: of the whole record, and of the build/provision/inspect
    fields (``bmc`` counts for inspection by its identity, ``bmc_identity``, alone).

    Each field is encoded once and the three documents are assembled from the pieces: the
    bytes are exactly ``json.dumps(sub_record, sort_keys=True, separators=(",", ":"),
    default=str)`` (the record's keys are plain identifiers, so ``"key":`` is their encoding).
    """
    parts = {key: f'"{key}":{_encode(value)}' for key, value in rec.items()}

    def digest(keys: tuple[str, ...]) -> str:
        blob = "{" + ",".join([parts[k] for k in keys]) + "}"
        return hashlib.sha256(blob.encode()).hexdigest()

    spec = digest(_sorted(tuple(parts)))
    parts["bmc"] = f'"bmc":{_encode(bmc_identity)}'
    return Digests(spec, digest(_BUILD_ORDER), digest(_PROVISION_ORDER), digest(_INSPECT_ORDER))


@functools.cache
def _sorted(keys: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(keys))


_BUILD_ORDER = BUILD_FIELDS  # sorted already
_PROVISION_ORDER = PROVISION_FIELDS
_INSPECT_ORDER = INSPECT_FIELDS


def bmc_identity(bmc: Bmc) -> dict[str, Any]:
    """Which machine a BMC address and system id name (``host[:port]`` case-blind, as the
    duplicate check compares them): the part of ``bmc`` an inspection depends on."""
    return {"host": bmc.host.lower(), "system_id": bmc.system_id}


def desired_hosts(inventory: Inventory) -> dict[str, DesiredHost]:
    """Every valid server, profile applied, addresses assigned; in IPAM seniority order.

    A host is a pure function of its server file, the shared files (subnets, profiles), its
    assigned addresses and the templates digest; when ``inventory.built`` has one made from the
    same inputs (a second revision parsed with the same cache) it is reused.
    """
    with paused_gc():
        return _desired_hosts(inventory)


def _desired_hosts(inventory: Inventory) -> dict[str, DesiredHost]:
    out: dict[str, DesiredHost] = {}
    templates_digest = inventory.templates_digest
    addresses = inventory.allocation.addresses
    memo = inventory.built
    for name in inventory.seniority:
        s = inventory.servers[name]
        used = [i for i in s.interfaces if i.mode != "dhcp" and i.subnet is not None]
        assigned = tuple(addresses[(name, i.name)] for i in used)
        # Everything a host is made of besides the server: its profile and subnets (frozen
        # objects, compared by identity), its addresses and the templates digest.
        inputs = (inventory.profiles[s.profile],
                  *(inventory.subnets[i.subnet] for i in used if i.subnet is not None))
        built = memo.get(name)
        key = (assigned, templates_digest)
        if built is not None and built.model is s:
            hit = built.hosts.get(key)
            if hit is not None and len(hit[0]) == len(inputs) and all(
                a is b for a, b in zip(hit[0], inputs, strict=True)
            ):
                out[name] = hit[1]
                continue
        host = _desired_host(inventory, s, assigned, templates_digest)
        if built is not None and built.model is s:
            built.hosts[key] = (inputs, host)
        out[name] = host
    return out


def _desired_host(inventory: Inventory, s: Server, assigned: tuple[IPv4Address, ...],
                  templates_digest: str) -> DesiredHost:
    profile = inventory.profiles[s.profile]
    ifaces = []
    granted = iter(assigned)
    primary_done = False
    for iface in s.interfaces:
        if iface.mode == "dhcp" or iface.subnet is None:
            ifaces.append(NetworkInterface(iface.name, iface.mac, "dhcp", iface.subnet))
            continue
        subnet = inventory.subnets[iface.subnet]
        ip = next(granted)
        primary = not primary_done
        primary_done = True
        ifaces.append(NetworkInterface(
            iface.name, iface.mac, iface.mode, iface.subnet,
            IPv4Interface((int(ip), subnet.network.prefixlen)),  # an int skips re-parsing
            subnet.gateway if primary else None, subnet.dns, primary))
    host = DesiredHost(
        name=s.name,
        file=s.file,
        state=s.state,
        protected=s.protected,
        suspend=s.suspend,
        architecture=s.architecture or profile.architecture,
        bmc=s.bmc,
        boot_method=s.bmc.boot_method or profile.boot_method,
        kernel=profile.kernel,
        initramfs=profile.initramfs,
        cmdline=profile.cmdline,
        interfaces=tuple(ifaces),
        disk=s.disk,
        image=s.image or profile.image,
        ssh_keys=tuple(dict.fromkeys(profile.cloud_init.ssh_keys + s.cloud_init.ssh_keys)),
        user_data=merge_user_data(profile.cloud_init.user_data, s.cloud_init.user_data),
        templates_digest=templates_digest,
        digests=_PENDING,
        inspect_generation=s.inspect_generation,
    )
    # The digests are of the record of this very object; set once, before anyone sees it
    # (dataclasses.replace would build the whole object a second time).
    object.__setattr__(host, "digests", _digests(_record(host, with_digests=False),
                                                 bmc_identity(s.bmc)))
    return host


_PENDING = Digests("", "", "")
