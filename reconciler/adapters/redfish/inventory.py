"""Out-of-band hardware inventory: what the BMC says about a server, as frozen data.

Pure parsing of Redfish documents (``from_documents``) kept apart from fetching them
(``driver.Bmc.inventory``), so the same code reads recorded JSON in tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from reconciler.model.identifiers import normalise_mac

Doc = Mapping[str, Any]

# Drive Identifiers that are a WWN (Redfish DurableNameFormat values).
WWN_FORMATS = ("NAA", "EUI", "FC_WWN", "NGUID")


@dataclass(frozen=True, slots=True)
class Nic:
    id: str
    mac: str
    speed_mbps: int | None = None
    link: str | None = None


@dataclass(frozen=True, slots=True)
class Drive:
    id: str
    name: str
    serial: str | None
    wwn: str | None
    size_bytes: int | None
    model: str | None = None
    media_type: str | None = None
    protocol: str | None = None


@dataclass(frozen=True, slots=True)
class Cpu:
    id: str
    model: str | None
    cores: int | None
    threads: int | None
    architecture: str | None = None


@dataclass(frozen=True, slots=True)
class Dimm:
    id: str
    size_mib: int | None
    memory_type: str | None = None
    speed_mhz: int | None = None
    serial: str | None = None


@dataclass(frozen=True, slots=True)
class Inventory:
    system_id: str
    uuid: str | None
    serial: str | None
    manufacturer: str | None
    model: str | None
    bios_version: str | None
    power_state: str | None
    cpu_count: int | None
    memory_gib: float | None
    nics: tuple[Nic, ...]
    drives: tuple[Drive, ...]
    cpus: tuple[Cpu, ...]
    memory: tuple[Dimm, ...]
    profile: str = "generic"

    def to_record(self) -> dict[str, Any]:
        """JSON-ready dict (what ``reconciler bmc inventory`` prints)."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Inventory:
        return cls(
            **{
                **record,
                "nics": tuple(Nic(**n) for n in record.get("nics", ())),
                "drives": tuple(Drive(**d) for d in record.get("drives", ())),
                "cpus": tuple(Cpu(**c) for c in record.get("cpus", ())),
                "memory": tuple(Dimm(**m) for m in record.get("memory", ())),
            }
        )


def _str(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def nic_from(doc: Doc) -> Nic | None:
    """None for an interface without a MAC (some BMCs list empty strings: catalogue Q35)."""
    mac = _str(doc.get("PermanentMACAddress")) or _str(doc.get("MACAddress"))
    if not mac:
        return None
    try:
        # One form everywhere (``aa:bb:...``): a BMC that writes AA-BB-... must not trip the
        # wrong-machine guard, which compares with the inventory's colon form.
        canonical = normalise_mac(mac)
    except ValueError:
        canonical = mac.lower()  # shown as reported; it matches no inventory MAC
    if canonical.replace(":", "").strip("0") == "":
        return None
    return Nic(
        id=str(doc.get("Id", mac)),
        mac=canonical,
        speed_mbps=_int(doc.get("SpeedMbps")),
        link=_str(doc.get("LinkStatus")),
    )


def drive_from(doc: Doc) -> Drive:
    wwn = None
    for ident in doc.get("Identifiers") or ():
        if isinstance(ident, Mapping) and ident.get("DurableNameFormat") in WWN_FORMATS:
            wwn = _str(ident.get("DurableName"))
            if wwn:
                break
    return Drive(
        id=str(doc.get("Id", "")),
        name=str(doc.get("Name", doc.get("Id", ""))),
        serial=_str(doc.get("SerialNumber")),
        wwn=wwn,
        size_bytes=_int(doc.get("CapacityBytes")),
        model=_str(doc.get("Model")),
        media_type=_str(doc.get("MediaType")),
        protocol=_str(doc.get("Protocol")),
    )


def simple_storage_drives(doc: Doc) -> list[Drive]:
    """Drives listed inline by the older SimpleStorage resource (no serial, no WWN)."""
    out = []
    for i, dev in enumerate(doc.get("Devices") or ()):
        if isinstance(dev, Mapping):
            out.append(
                Drive(
                    id=f"{doc.get('Id', 'simple')}-{i}",
                    name=str(dev.get("Name", i)),
                    serial=None,
                    wwn=None,
                    size_bytes=_int(dev.get("CapacityBytes")),
                    model=_str(dev.get("Model")),
                )
            )
    return out


def cpu_from(doc: Doc) -> Cpu:
    return Cpu(
        id=str(doc.get("Id", "")),
        model=_str(doc.get("Model")),
        cores=_int(doc.get("TotalCores")),
        threads=_int(doc.get("TotalThreads")),
        architecture=_str(doc.get("ProcessorArchitecture")) or _str(doc.get("InstructionSet")),
    )


def dimm_from(doc: Doc) -> Dimm | None:
    """None for an empty DIMM socket."""
    status = doc.get("Status") or {}
    if isinstance(status, Mapping) and status.get("State") == "Absent":
        return None
    return Dimm(
        id=str(doc.get("Id", "")),
        size_mib=_int(doc.get("CapacityMiB")),
        memory_type=_str(doc.get("MemoryDeviceType")) or _str(doc.get("MemoryType")),
        speed_mhz=_int(doc.get("OperatingSpeedMhz")),
        serial=_str(doc.get("SerialNumber")),
    )


def from_documents(
    system: Doc,
    *,
    nics: Sequence[Doc] = (),
    drives: Sequence[Doc] = (),
    simple_storage: Sequence[Doc] = (),
    cpus: Sequence[Doc] = (),
    dimms: Sequence[Doc] = (),
    profile: str = "generic",
) -> Inventory:
    summary_cpu = system.get("ProcessorSummary") or {}
    summary_mem = system.get("MemorySummary") or {}
    parsed_drives = [drive_from(d) for d in drives]
    if not parsed_drives:
        for doc in simple_storage:
            parsed_drives.extend(simple_storage_drives(doc))
    memory_gib = summary_mem.get("TotalSystemMemoryGiB") if summary_mem else None
    return Inventory(
        system_id=str(system.get("Id", "")),
        uuid=_str(system.get("UUID")),
        serial=_str(system.get("SerialNumber")),
        manufacturer=_str(system.get("Manufacturer")),
        model=_str(system.get("Model")),
        bios_version=_str(system.get("BiosVersion")),
        power_state=_str(system.get("PowerState")),
        cpu_count=_int(summary_cpu.get("Count")) if summary_cpu else None,
        memory_gib=float(memory_gib) if isinstance(memory_gib, (int, float)) else None,
        nics=tuple(n for n in (nic_from(d) for d in nics) if n is not None),
        drives=tuple(parsed_drives),
        cpus=tuple(cpu_from(d) for d in cpus),
        memory=tuple(m for m in (dimm_from(d) for d in dimms) if m is not None),
        profile=profile,
    )
