"""Inspection and provisioning steps run over SSH in the ephemeral OS.

Each step is a small async function over a :class:`~reconciler.adapters.ssh.Shell`: it runs
fixed commands, and a pure function parses their output. Output that does not have the
expected shape raises :class:`~reconciler.errors.PermanentError` naming the command, never a
``KeyError`` three frames later. The steps follow the design's "Provisioning a Known Server":

    disk = await find_disk(shell, serial="LABDISK0001")           # /dev/disk/by-id/...
    await write_image(shell, url, sha256, disk)                    # curl, sha256, qemu-img
    part = await find_root_partition(shell, disk, "amd64")         # GPT type GUID via lsblk
    await seed_nocloud(shell, part, meta_data, user_data, network_config)
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.adapters.ssh import Shell
from reconciler.errors import InputError, PermanentError
from reconciler.model.identifiers import normalise_wwn

LOG = logging.getLogger(__name__)

BY_ID = "/dev/disk/by-id"

# Discoverable Partitions Specification: root partition type GUID per architecture.
ROOT_PARTITION_TYPES: dict[str, str] = {
    "amd64": "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
    "arm64": "b921b045-1df0-41c3-af44-4c6f280d3fae",
}

SEED_DIR = "var/lib/cloud/seed/nocloud"
INSTANCE_ID = "/var/lib/cloud/data/instance-id"
HW_INVENTORY = "/usr/local/bin/hw-inventory"
MOUNTPOINT = "/mnt/target"
DOWNLOAD = "/tmp/reconciler-image"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DEVICE = re.compile(r"^/dev/[A-Za-z0-9._:/+-]+$")
_PART_SUFFIX = re.compile(r"-part\d+$")


# --- finding the target disk ---------------------------------------------------------------


def parse_by_id_listing(text: str) -> dict[str, str]:
    """``<link> <resolved device>`` lines -> {by-id path: device}."""
    links: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].startswith(BY_ID + "/"):
            raise PermanentError(f"listing {BY_ID}: line {number} is not '<link> <device>'")
        links[parts[0]] = parts[1]
    return links


def _normalise_wwn(wwn: str) -> str:
    """The inspection reports' form (:func:`reconciler.model.identifiers.normalise_wwn`: an
    NVMe ``eui.``/``nvme-eui.`` too); what is not a WWN there is only lower-cased and stripped
    of ``wwn-``/``0x``/``naa.``, as before."""
    try:
        return normalise_wwn(wwn)
    except ValueError:
        value = wwn.strip().lower()
        for prefix in ("wwn-", "0x", "naa."):
            value = value.removeprefix(prefix)
        return value


def parse_lsblk_identities(text: str, command: str) -> dict[str, tuple[str, str]]:
    """``lsblk -J -d -o PATH,SERIAL,WWN`` -> {device: (serial, normalised wwn)}."""
    try:
        devices = json.loads(text)["blockdevices"]
        return {
            str(d["path"]): (str(d.get("serial") or "").strip(), _normalise_wwn(d.get("wwn") or ""))
            for d in devices
        }
    except (ValueError, KeyError, TypeError):
        raise PermanentError(f"`{command}` did not print lsblk JSON") from None


def choose_disk(
    links: Mapping[str, str],
    *,
    serial: str | None,
    wwn: str | None,
    identities: Mapping[str, tuple[str, str]] | None = None,
) -> str:
    """The by-id path of the one whole disk with this serial (or, failing that, WWN).

    A serial matches at the end of a link name after ``-`` or ``_`` (``virtio-SERIAL``,
    ``ata-MODEL_SERIAL``, ``nvme-MODEL_SERIAL``): a bare substring match, as in the design's
    ``*serial*`` glob, would let serial ``ABC1`` pick disk ``ABC12``. SCSI/SAS disks that
    report a WWN get by-id names from the WWN only (``scsi-3<naa>``, ``wwn-0x<naa>``), so the
    serial (and the WWN) are also compared with what lsblk reports per device (``identities``),
    and the answer is then a by-id link to that device (``wwn-`` preferred).
    """
    if not serial and not wwn:
        raise InputError("find_disk: give a disk serial or a WWN")
    whole = {link: dev for link, dev in links.items() if not _PART_SUFFIX.search(link)}
    identities = identities or {}
    if serial:
        wanted = "serial " + serial
        by_name = {
            link: dev for link, dev in whole.items()
            if re.search(r"[-_]" + re.escape(serial) + "$", link.rsplit("/", 1)[1])
        }
        by_lsblk = {dev for dev, (ser, _) in identities.items() if ser == serial}
    else:
        assert wwn is not None
        wanted = "WWN " + wwn
        value = _normalise_wwn(wwn)
        by_name = {
            link: dev for link, dev in whole.items()
            if link.rsplit("/", 1)[1].startswith("wwn-")
            and _normalise_wwn(link.rsplit("/", 1)[1]) == value
        }
        by_lsblk = {dev for dev, (_, w) in identities.items() if w and w == value}
    devices = sorted(set(by_name.values()) | by_lsblk)
    if not devices:
        raise PermanentError(f"no disk with {wanted} under {BY_ID}",
                             hint="check the inventory against hw-inventory's disks")
    if len(devices) > 1:
        raise PermanentError(f"{wanted} matches several disks: {', '.join(devices)}")
    if by_name:
        return sorted(by_name)[0]
    candidates = sorted(link for link, dev in whole.items() if dev == devices[0])
    if not candidates:
        raise PermanentError(f"{wanted} is {devices[0]}, which has no {BY_ID} link")
    preferred = [link for link in candidates if link.rsplit("/", 1)[1].startswith("wwn-")]
    return (preferred or candidates)[0]


_LSBLK_MARK = "--- lsblk"


async def find_disk(shell: Shell, *, serial: str | None = None, wwn: str | None = None) -> str:
    lsblk = "lsblk -J -d -o PATH,SERIAL,WWN"
    command = (
        "udevadm settle --timeout=30 >/dev/null 2>&1; "
        f"for f in {BY_ID}/*; do [ -e \"$f\" ] && "
        "printf '%s %s\\n' \"$f\" \"$(readlink -f \"$f\")\"; done; "
        f"echo '{_LSBLK_MARK}'; {lsblk}"
    )
    result = await shell.run(command, timeout=60)
    listing, sep, lsblk_json = result.stdout.partition(_LSBLK_MARK + "\n")
    if not sep:
        raise PermanentError(f"`{lsblk}` output missing from the disk listing")
    return choose_disk(
        parse_by_id_listing(listing), serial=serial, wwn=wwn,
        identities=parse_lsblk_identities(lsblk_json, lsblk),
    )


# --- writing the image ---------------------------------------------------------------------


def _check_device(device: str) -> str:
    if not _DEVICE.match(device):
        raise InputError(f"device {device!r} is not a /dev path")
    return device


def parse_sha256sum(text: str, command: str) -> str:
    digest = text.split()[0] if text.split() else ""
    if not _SHA256.match(digest):
        raise PermanentError(f"`{command}` printed no sha256: {text.strip()[:80]!r}")
    return digest


def parse_image_format(text: str, command: str) -> str:
    try:
        info = json.loads(text)
        fmt = info["format"]
    except (ValueError, KeyError, TypeError):
        raise PermanentError(f"`{command}` did not print JSON with a format") from None
    if fmt not in ("qcow2", "raw"):
        raise PermanentError(f"image format {fmt!r} is not qcow2 or raw")
    return str(fmt)


async def write_image(
    shell: Shell, url: str, sha256: str, device: str, *, timeout: float = 1800
) -> None:
    """Download ``url``, check its sha256, write it raw onto ``device``, fix the backup GPT.

    ``qemu-img`` cannot read http(s) in the ephemeral OS (no qemu-block-extra), so the image
    is downloaded into RAM first; the root tmpfs is grown to 90 % of RAM for that.
    """
    sha256 = sha256.lower()
    if not _SHA256.match(sha256):
        raise InputError(f"image sha256 {sha256!r} is not 64 hex digits")
    if not url.startswith(("http://", "https://")):
        raise InputError(f"image url {url!r} is not http(s)")
    _check_device(device)
    q = shlex.quote
    await shell.run("mount -o remount,size=90% /", timeout=30)
    await shell.run(f"curl -fsSL --retry 3 -o {DOWNLOAD} {q(url)}", timeout=timeout)
    try:
        command = f"sha256sum {DOWNLOAD}"
        got = parse_sha256sum((await shell.run(command, timeout=600)).stdout, command)
        if got != sha256:
            raise PermanentError(f"image {url}: sha256 {got} does not match {sha256}")
        command = f"qemu-img info --output=json {DOWNLOAD}"
        fmt = parse_image_format((await shell.run(command, timeout=60)).stdout, command)
        await shell.run(
            f"qemu-img convert -f {fmt} -O raw -t none {DOWNLOAD} {q(device)}", timeout=timeout
        )
    finally:
        await shell.run(f"rm -f {DOWNLOAD}", timeout=60, check=False)
    # The image is smaller than the disk: move the backup GPT header to the disk's end.
    await shell.run(f"sgdisk -e {q(device)}", timeout=60)
    await shell.run(
        f"partprobe {q(device)} 2>/dev/null; udevadm settle --timeout=30", timeout=60, check=False
    )


# --- the root partition and the NoCloud seed -----------------------------------------------


def root_partition_from_lsblk(text: str, guid: str, command: str) -> str:
    try:
        devices = json.loads(text)["blockdevices"]
    except (ValueError, KeyError, TypeError):
        raise PermanentError(f"`{command}` did not print lsblk JSON") from None
    stack: list[Any] = list(devices)
    while stack:
        dev = stack.pop(0)
        if not isinstance(dev, dict):
            raise PermanentError(f"`{command}`: unexpected entry {dev!r}")
        if str(dev.get("parttype") or "").lower() == guid:
            path = dev.get("path")
            if not isinstance(path, str):
                raise PermanentError(f"`{command}`: partition without a path")
            return path
        stack.extend(dev.get("children") or [])
    raise PermanentError(
        f"no partition of type {guid} (Discoverable Partitions root) in `{command}`",
        hint="the image's root partition must carry the architecture's root type GUID",
    )


async def find_root_partition(shell: Shell, device: str, arch: str) -> str:
    try:
        guid = ROOT_PARTITION_TYPES[arch]
    except KeyError:
        raise InputError(f"architecture {arch!r} is not one of amd64, arm64") from None
    command = f"lsblk -J -o PATH,PARTTYPE {shlex.quote(_check_device(device))}"
    result = await shell.run(command, timeout=60)
    return root_partition_from_lsblk(result.stdout, guid, command)


async def seed_nocloud(
    shell: Shell,
    partition: str,
    meta_data: str,
    user_data: str,
    network_config: str | None = None,
) -> None:
    """Mount ``partition`` and write the NoCloud seed the installed OS reads at first boot."""
    q = shlex.quote
    part = q(_check_device(partition))
    seed = f"{MOUNTPOINT}/{SEED_DIR}"
    files = {"meta-data": meta_data, "user-data": user_data}
    if network_config is not None:
        files["network-config"] = network_config
    await shell.run(f"mkdir -p {MOUNTPOINT} && mount {part} {MOUNTPOINT}", timeout=60)
    try:
        await shell.run(f"install -d -m 0755 {seed}", timeout=30)
        for name, content in files.items():
            path = f"{seed}/{name}"
            await shell.run(
                f"cat > {path}.tmp && chmod 0644 {path}.tmp && mv {path}.tmp {path}",
                timeout=60,
                input=content.encode(),
            )
        if network_config is None:
            await shell.run(f"rm -f {seed}/network-config", timeout=30)
        await shell.run("sync", timeout=120)
    finally:
        await shell.run(f"umount {MOUNTPOINT}", timeout=120)


# --- identity and inventory ----------------------------------------------------------------


async def read_instance_id(shell: Shell) -> str:
    command = f"cat {INSTANCE_ID}"
    text = (await shell.run(command, timeout=30)).stdout.strip()
    if not text or "\n" in text:
        raise PermanentError(f"`{command}` printed {text[:80]!r}, not one instance id")
    return text


async def verify_instance_id(shell: Shell, expected: str) -> None:
    got = await read_instance_id(shell)
    if got != expected:
        raise PermanentError(
            f"{shell.host}: instance-id is {got!r}, expected {expected!r}: not the booted server"
        )


@dataclass(frozen=True, slots=True)
class InventoryDisk:
    name: str
    path: str
    serial: str | None
    wwn: str | None
    size_bytes: int
    by_id: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class InventoryNic:
    name: str
    mac: str
    link: bool
    driver: str | None


@dataclass(frozen=True, slots=True)
class HwInventory:
    inspection_id: str | None
    system: Mapping[str, str | None]
    cpu_count: int
    memory_bytes: int
    disks: tuple[InventoryDisk, ...]
    nics: tuple[InventoryNic, ...]
    raw: Mapping[str, Any]


_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def _field(obj: Any, key: str, kind: type | tuple[type, ...], where: str, command: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise PermanentError(f"`{command}`: {where}.{key} is missing")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PermanentError(f"`{command}`: {where}.{key} has the wrong type: {value!r}")
    return value


def parse_hw_inventory(text: str, command: str = HW_INVENTORY) -> HwInventory:
    """Validate hw-inventory's JSON; errors name the command and the field."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PermanentError(f"`{command}` did not print JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PermanentError(f"`{command}` printed {type(data).__name__}, not a JSON object")
    system = _field(data, "system", dict, "inventory", command)
    cpus = _field(data, "cpus", dict, "inventory", command)
    memory = _field(data, "memory", dict, "inventory", command)
    disks = []
    for i, disk in enumerate(_field(data, "disks", list, "inventory", command)):
        where = f"disks[{i}]"
        by_id = _field(disk, "byId", list, where, command)
        if not all(isinstance(p, str) for p in by_id):
            raise PermanentError(f"`{command}`: {where}.byId must list paths")
        disks.append(
            InventoryDisk(
                name=_field(disk, "name", str, where, command),
                path=_field(disk, "path", str, where, command),
                serial=_field(disk, "serial", (str, type(None)), where, command),
                wwn=_field(disk, "wwn", (str, type(None)), where, command),
                size_bytes=_field(disk, "sizeBytes", int, where, command),
                by_id=tuple(by_id),
            )
        )
    nics = []
    for i, nic in enumerate(_field(data, "nics", list, "inventory", command)):
        where = f"nics[{i}]"
        mac = _field(nic, "mac", str, where, command).lower()
        if not _MAC.match(mac):
            raise PermanentError(f"`{command}`: {where}.mac {mac!r} is not a MAC address")
        nics.append(
            InventoryNic(
                name=_field(nic, "name", str, where, command),
                mac=mac,
                link=_field(nic, "link", bool, where, command),
                driver=_field(nic, "driver", (str, type(None)), where, command),
            )
        )
    inspection_id = data.get("id")
    if inspection_id is not None and not isinstance(inspection_id, str):
        raise PermanentError(f"`{command}`: inventory.id has the wrong type")
    return HwInventory(
        inspection_id=inspection_id,
        system={k: v if isinstance(v, str) else None for k, v in system.items()},
        cpu_count=_field(cpus, "logical", int, "cpus", command),
        memory_bytes=_field(memory, "totalBytes", int, "memory", command),
        disks=tuple(disks),
        nics=tuple(nics),
        raw=data,
    )


async def hw_inventory(shell: Shell, inspection_id: str | None = None) -> HwInventory:
    command = HW_INVENTORY + (f" {shlex.quote(inspection_id)}" if inspection_id else "")
    result = await shell.run(command, timeout=120)
    return parse_hw_inventory(result.stdout, command)
