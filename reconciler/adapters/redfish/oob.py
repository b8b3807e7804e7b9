"""The out-of-band inventory record: what a BMC says about a server's hardware, for
``inspection/<server>.yaml`` (its ``redfish`` section).

Pure parsing of Redfish documents, apart from fetching them (``driver.Bmc.oob_inventory``)
so ``FakeBmc`` and tests use the same code on recorded JSON. The record holds no volatile
value (no power state, health, temperature, link speed or link state), and its lists are
sorted and free of duplicates, so two readings of unchanged hardware are equal::

    {"system": {"manufacturer", "model", "serial_number", "sku", "part_number", "uuid",
                "bios_version"},
     "manager": {"manufacturer", "model", "firmware_version"},
     "nics": [{"mac", "name"}],
     "drives": [{"name", "model", "serial_number", "wwn", "size_bytes", "protocol",
                 "media_type"}],
     "firmware": [{"name", "version"}],
     "unavailable": ["drives: HTTP 500 from GET /redfish/v1/Systems/1/Storage: ...", ...]}

``None`` where the BMC does not say. MACs and WWNs are in the canonical forms of
:mod:`reconciler.model.identifiers`. BMC answers are untrusted: a field of the wrong type or
absurd length becomes ``None`` and a note in ``unavailable``; a malformed item is skipped
with a note; nothing here raises on a BMC's answer except :class:`Malformed` for a document
whose *structure* is wrong (the driver turns that into a note for the part it concerns).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict
from urllib import parse as urlparse

from reconciler.log import REDACTED, redact
from reconciler.model.identifiers import normalise_mac, normalise_wwn

Doc = Mapping[str, Any]

MAX_TEXT = 256  # longer strings from a BMC are refused (noted), not stored
MAX_NICS = 64
MAX_CONTROLLERS = 32
MAX_DRIVES = 256
MAX_FIRMWARE = 256
MAX_PAGES = 16  # Members@odata.nextLink pages followed per collection
MAX_NOTES = 20

# Identifiers[].DurableNameFormat values that are a WWN, in order of preference: NGUID
# before EUI-64 as Linux builds /sys/block/nvme*/wwid (so the in-band report agrees).
WWN_PREFERENCE = ("NAA", "NGUID", "EUI", "FC_WWN")

# FirmwareInventory members that are not running firmware. Dell iDRAC lists each component
# as Installed-<id>-<version>__<FQDD> (and Current-...), plus the rollback image
# (Previous-...) and staged packages (Available-...).
FIRMWARE_SKIP_ID_PREFIXES = ("Previous-", "Available-")

# Names of the two entries added from the System and the Manager to the firmware list.
BIOS_FIRMWARE = "BIOS"
BMC_FIRMWARE = "BMC"


class OobSystem(TypedDict):
    manufacturer: str | None
    model: str | None
    serial_number: str | None
    sku: str | None
    part_number: str | None
    uuid: str | None
    bios_version: str | None


class OobManager(TypedDict):
    manufacturer: str | None
    model: str | None
    firmware_version: str | None


class OobNic(TypedDict):
    mac: str
    name: str | None


class OobDrive(TypedDict):
    name: str | None
    model: str | None
    serial_number: str | None
    wwn: str | None
    size_bytes: int | None
    protocol: str | None
    media_type: str | None


class OobFirmware(TypedDict):
    name: str
    version: str | None


class OobInventory(TypedDict):
    system: OobSystem
    manager: OobManager
    nics: list[OobNic]
    drives: list[OobDrive]
    firmware: list[OobFirmware]
    unavailable: list[str]


class Malformed(ValueError):
    """A BMC document whose structure is wrong; the message names the resource and field."""


class Notes:
    """What could not be read, one short line each (at most ``MAX_NOTES``), secrets removed:
    the registered ones (:func:`reconciler.log.redact`) and ``secrets`` given here (the
    BMC's password, which a BMC could echo back)."""

    def __init__(self, secrets: Iterable[str] = (), limit: int = MAX_NOTES) -> None:
        self._secrets = tuple(s for s in secrets if s and len(s) >= 3)
        self._limit = limit
        self._items: list[str] = []
        self._dropped = 0

    def add(self, text: str) -> None:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        line = redact(" ".join(text.split()))
        if len(line) > 200:
            line = line[:197] + "..."
        if line in self._items:
            return
        if len(self._items) < self._limit:
            self._items.append(line)
        else:
            self._dropped += 1

    def result(self) -> list[str]:
        more = [f"... {self._dropped} more not shown"] if self._dropped else []
        return sorted(self._items) + more


def where(doc: Doc, fallback: str) -> str:
    """How notes name a document: its ``@odata.id`` if it is a short string, else ``fallback``."""
    path = doc.get("@odata.id")
    return path if isinstance(path, str) and 0 < len(path) <= MAX_TEXT else fallback


def text(doc: Doc, field: str, at: str, notes: Notes) -> str | None:
    """A string property: whitespace collapsed, ``None`` when absent or empty. A number is
    taken as its text; any other type, or more than ``MAX_TEXT`` characters, is noted."""
    value = doc.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        notes.add(f"{at}: {field} is a {type(value).__name__}, expected a string")
        return None
    shown = " ".join(str(value).split())
    if len(shown) > MAX_TEXT:
        notes.add(f"{at}: {field} is {len(shown)} characters long (at most {MAX_TEXT})")
        return None
    return shown or None


def size(doc: Doc, field: str, at: str, notes: Notes) -> int | None:
    """A non-negative integer property (a string of digits is accepted), else noted."""
    value = doc.get(field)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        notes.add(f"{at}: {field} {str(value)[:40]!r} is not a size in bytes")
        return None
    return value


def link(value: object, at: str, field: str, base_url: str) -> str:
    """The path of a ``{"@odata.id": ...}`` reference (or a bare string), checked: it must
    stay on this BMC (a full URL naming another host would get our credentials: the
    connector follows full URLs as given) and under ``/redfish/`` without ``..``."""
    if isinstance(value, Mapping):
        value = value.get("@odata.id")
    if not isinstance(value, str) or not value:
        raise Malformed(f"{at}: {field} has no @odata.id")
    if len(value) > 2 * MAX_TEXT:
        raise Malformed(f"{at}: {field} is {len(value)} characters long")
    parsed = urlparse.urlsplit(value)
    if parsed.scheme or parsed.netloc:
        if f"{parsed.scheme}://{parsed.netloc}".lower() != base_url.lower():
            raise Malformed(f"{at}: {field} points off the BMC (to {parsed.netloc[:60] or '?'})")
    if parsed.fragment or not parsed.path.startswith("/redfish/") \
            or ".." in parsed.path.split("/"):
        raise Malformed(f"{at}: {field} {value[:80]!r} is not a Redfish path on this BMC")
    # A query stays: Members@odata.nextLink pages are "...?$skip=N".
    return parsed.path + (f"?{parsed.query}" if parsed.query else "")


def optional_link(doc: Doc, field: str, at: str, base_url: str) -> str | None:
    """``doc[field]["@odata.id"]`` checked as :func:`link`, ``None`` when the field is absent."""
    if doc.get(field) is None:
        return None
    return link(doc[field], at, field, base_url)


def system_part(doc: Doc, notes: Notes) -> OobSystem:
    at = "system: " + where(doc, "the System")
    raw_uuid = text(doc, "UUID", at, notes)
    try:
        canonical_uuid = str(uuid.UUID(raw_uuid)) if raw_uuid else None
    except ValueError:
        canonical_uuid = raw_uuid  # what the BMC says, even if it is not a UUID
    return OobSystem(
        manufacturer=text(doc, "Manufacturer", at, notes),
        model=text(doc, "Model", at, notes),
        serial_number=text(doc, "SerialNumber", at, notes),
        sku=text(doc, "SKU", at, notes),
        part_number=text(doc, "PartNumber", at, notes),
        uuid=canonical_uuid,
        bios_version=text(doc, "BiosVersion", at, notes),
    )


def manager_part(doc: Doc | None, notes: Notes) -> OobManager:
    if doc is None:
        return OobManager(manufacturer=None, model=None, firmware_version=None)
    at = "manager: " + where(doc, "the Manager")
    return OobManager(
        manufacturer=text(doc, "Manufacturer", at, notes),
        model=text(doc, "Model", at, notes),
        firmware_version=text(doc, "FirmwareVersion", at, notes),
    )


def nic_entry(doc: Doc, notes: Notes) -> OobNic | None:
    """One EthernetInterface, its MAC chosen by ``nic_macs()``'s rule: ``PermanentMACAddress``
    (the burnt-in address; ``MACAddress`` may be a virtual one on partitioned NICs), else
    ``MACAddress``; empty and all-zero values mean "no MAC" (catalogue Q35). The MAC is
    normalised (dashes, upper case); an invalid one is noted and skipped. ``name`` is the
    interface's Redfish ``Id`` (unique in its collection; ``Name`` is the same for every
    port on Dell), else its ``Name``. ``None`` for an interface without a usable MAC."""
    at = "nics: " + where(doc, "an EthernetInterface")
    bad = []
    for field in ("PermanentMACAddress", "MACAddress"):
        value = doc.get(field)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        try:
            mac = normalise_mac(value)
        except ValueError as exc:
            bad.append(f"{field} {exc}")
            continue
        if mac != "00:00:00:00:00:00":
            return OobNic(mac=mac, name=text(doc, "Id", at, notes) or text(doc, "Name", at, notes))
    if bad:
        notes.add(f"{at}: " + "; ".join(bad))
    return None


def _absent(doc: Doc) -> bool:
    status = doc.get("Status")
    return isinstance(status, Mapping) and status.get("State") == "Absent"


def drive_wwn(doc: Doc, at: str, notes: Notes) -> str | None:
    """The drive's WWN from ``Identifiers``: the first of ``WWN_PREFERENCE`` whose
    ``DurableName`` normalises (:func:`reconciler.model.identifiers.normalise_wwn`)."""
    idents = doc.get("Identifiers")
    if idents is None:
        return None
    if not isinstance(idents, list):
        notes.add(f"{at}: Identifiers is a {type(idents).__name__}, expected a list")
        return None
    found: dict[str, str] = {}
    for ident in idents[:16]:
        if not isinstance(ident, Mapping):
            continue
        fmt, name = ident.get("DurableNameFormat"), ident.get("DurableName")
        if fmt not in WWN_PREFERENCE or name in (None, "") or fmt in found:
            continue
        try:
            found[str(fmt)] = normalise_wwn(name)
        except ValueError as exc:
            notes.add(f"{at}: Identifiers {fmt}: {exc}")
    return next((found[f] for f in WWN_PREFERENCE if f in found), None)


def drive_entry(doc: Doc, notes: Notes) -> OobDrive | None:
    """One Drive; ``None`` for an empty bay (``Status.State`` Absent). An empty or blank
    ``SerialNumber`` (Supermicro, some HBAs) is ``None``."""
    if _absent(doc):
        return None
    at = "drives: " + where(doc, "a Drive")
    return OobDrive(
        name=text(doc, "Name", at, notes) or text(doc, "Id", at, notes),
        model=text(doc, "Model", at, notes),
        serial_number=text(doc, "SerialNumber", at, notes),
        wwn=drive_wwn(doc, at, notes),
        size_bytes=size(doc, "CapacityBytes", at, notes),
        protocol=text(doc, "Protocol", at, notes),
        media_type=text(doc, "MediaType", at, notes),
    )


def simple_storage_drives(doc: Doc, notes: Notes) -> list[OobDrive]:
    """The devices listed inline by a SimpleStorage controller (older BMCs; the sushy-tools
    libvirt driver): name, model and size only."""
    at = where(doc, "a SimpleStorage")
    devices = doc.get("Devices")
    if devices is None:
        return []
    if not isinstance(devices, list):
        raise Malformed(f"{at}: Devices is a {type(devices).__name__}, expected a list")
    out: list[OobDrive] = []
    for i, dev in enumerate(devices[:MAX_DRIVES]):
        if not isinstance(dev, Mapping):
            notes.add(f"drives: {at}: Devices[{i}] is not an object")
            continue
        if _absent(dev):
            continue
        item = f"drives: {at} Devices[{i}]"
        out.append(OobDrive(
            name=text(dev, "Name", item, notes), model=text(dev, "Model", item, notes),
            serial_number=None, wwn=None, size_bytes=size(dev, "CapacityBytes", item, notes),
            protocol=None, media_type=None,
        ))
    if len(devices) > MAX_DRIVES:
        notes.add(f"drives: {at}: {len(devices)} devices, read the first {MAX_DRIVES}")
    return out


def firmware_entry(doc: Doc, notes: Notes) -> OobFirmware | None:
    """One FirmwareInventory member (``Name``, else ``Id``; ``Version``); ``None`` for the
    members of ``FIRMWARE_SKIP_ID_PREFIXES``."""
    at = "firmware: " + where(doc, "a FirmwareInventory member")
    ident = text(doc, "Id", at, notes)
    if ident and ident.startswith(FIRMWARE_SKIP_ID_PREFIXES):
        return None
    name = text(doc, "Name", at, notes) or ident
    if name is None:
        notes.add(f"{at}: no Name or Id")
        return None
    return OobFirmware(name=name, version=text(doc, "Version", at, notes))


def _key(item: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple("" if v is None else str(v) for v in item.values())


def _unique_sorted(items: Iterable[Any]) -> list[Any]:
    seen: dict[tuple[str, ...], Any] = {}
    for item in items:
        seen.setdefault(_key(item), item)
    return [seen[k] for k in sorted(seen)]


def assemble(
    system: OobSystem,
    manager: OobManager,
    nics: Iterable[OobNic],
    drives: Iterable[OobDrive],
    firmware: Iterable[OobFirmware],
    notes: Notes,
) -> OobInventory:
    """The record: lists sorted and without duplicates, the BIOS version and the Manager's
    firmware added to ``firmware``."""
    extra = []
    if system["bios_version"]:
        extra.append(OobFirmware(name=BIOS_FIRMWARE, version=system["bios_version"]))
    if manager["firmware_version"]:
        extra.append(OobFirmware(name=BMC_FIRMWARE, version=manager["firmware_version"]))
    return OobInventory(
        system=system,
        manager=manager,
        nics=_unique_sorted(nics),
        drives=_unique_sorted(drives),
        firmware=_unique_sorted([*firmware, *extra]),
        unavailable=notes.result(),
    )


def from_documents(
    system: Doc,
    *,
    manager: Doc | None = None,
    nics: Iterable[Doc] = (),
    drives: Iterable[Doc] = (),
    simple_storage: Iterable[Doc] = (),
    firmware: Iterable[Doc] = (),
    notes: Notes | None = None,
) -> OobInventory:
    """The record from documents already fetched (``FakeBmc``, tests): SimpleStorage devices
    are used only when no Drive is given, as the driver does."""
    notes = notes or Notes()
    parsed_drives = [d for d in (drive_entry(doc, notes) for doc in drives) if d is not None]
    if not parsed_drives:
        for doc in simple_storage:
            parsed_drives.extend(simple_storage_drives(doc, notes))
    return assemble(
        system_part(system, notes),
        manager_part(manager, notes),
        [n for n in (nic_entry(doc, notes) for doc in nics) if n is not None],
        parsed_drives,
        [f for f in (firmware_entry(doc, notes) for doc in firmware) if f is not None],
        notes,
    )
