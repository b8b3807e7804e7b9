"""Evidence against intent: where a server file contradicts what its server was found to be.

Pure: a desired host, its inspection report (``inspection/<name>.yaml``, see
:mod:`reconciler.model.inspection`) and optionally what the BMC says right now, in; a list of
:class:`Contradiction`, each naming the configured value and the evidence, out.

- a configured MAC (any ``interfaces[].mac``) that no evidence lists;
- a disk serial or WWN (``disk``) that no evidence lists;
- a target disk smaller than the image, when the image's size is known (the inventory's image
  has a URL and a digest, no size: the caller passes ``image_bytes`` when it knows it).

**Only complete-enough evidence contradicts.** A source counts only when it can have the
value: the ephemeral OS's NIC and disk lists (``hardware``) are the machine's own and count
when not empty; a BMC's lists (``redfish``, or ``live_*``) count when not empty, and for a disk
only when at least one drive carries that kind of identifier -- a BMC that lists no drives
proves nothing about disks, and many list only the drives behind their RAID controller
(an NVMe boot drive may be missing from an honest list: see the limits below). A value any
counting source has is confirmed, so stale evidence (a NIC replaced since the in-band
inspection, seen by the BMC since) does not contradict a file that is right now.

``reconciler validate`` and ``reconciler plan`` print contradictions as warnings (see
:func:`warnings`); the engine refuses a destructive step on any.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.model.desired import DesiredHost
from reconciler.model.inspection import normalise_wwn, report_path
from reconciler.model.inventory import Inventory

MAX_SHOWN = 8  # values of one source a message lists, then "N more"


@dataclass(frozen=True, slots=True)
class Contradiction:
    """``lab-host-01: interfaces[0].mac 52:54:00:aa:aa:aa is not on the server
    (inspection/lab-host-01.yaml: hardware nics 52:54:00:12:34:56)``"""

    host: str
    field: str  # as the server file spells it: interfaces[0].mac, disk.serial, disk.wwn
    value: str  # the configured value
    claim: str  # what the evidence says about it
    evidence: str  # the sources and their values

    def __str__(self) -> str:
        return f"{self.host}: {self.field} {self.value} {self.claim} ({self.evidence})"


@dataclass(frozen=True, slots=True)
class _Source:
    where: str  # "inspection/x.yaml: hardware nics", "BMC now: nics"
    values: tuple[str, ...]  # as shown

    def text(self) -> str:
        shown = list(self.values[:MAX_SHOWN])
        if len(self.values) > MAX_SHOWN:
            shown.append(f"{len(self.values) - MAX_SHOWN} more")
        return f"{self.where} {', '.join(shown) or 'none'}"


def _evidence(host: str, sources: list[_Source]) -> str:
    """``inspection/h.yaml: hardware nics a, b; redfish nics c; BMC now: d``."""
    report = [s for s in sources if not s.where.startswith("BMC")]
    live = [s for s in sources if s.where.startswith("BMC")]
    parts = []
    if report:
        parts.append(f"{report_path(host)}: " + "; ".join(s.text() for s in report))
    parts += [s.text() for s in live]
    return "; ".join(parts)


def _section(report: Mapping[str, Any] | None, name: str) -> Mapping[str, Any]:
    part = report.get(name) if report is not None else None
    return part if isinstance(part, Mapping) else {}


def _items(part: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = part.get(key)
    return [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []


def _size(n: int) -> str:
    return f"{n:,} bytes ({n / (1 << 30):.1f} GiB)"


@dataclass(frozen=True, slots=True)
class _Disk:
    """One disk as a source lists it, in comparable form."""

    serial: str | None  # stripped, case-folded
    wwn: str | None  # normalised
    size: int | None
    shown: str

    @classmethod
    def of(cls, serial: Any, wwn: Any, size: Any, name: Any = None) -> _Disk:
        s = serial.strip() if isinstance(serial, str) and serial.strip() else None
        w = normalise_wwn(wwn) if isinstance(wwn, str) and wwn.strip() else None
        n = size if isinstance(size, int) and not isinstance(size, bool) else None
        shown = s or (f"wwn {w}" if w else None) or (str(name) if name else "unnamed")
        return cls(s.casefold() if s else None, w, n, shown)


def contradictions(
    host: DesiredHost,
    report: Mapping[str, Any] | None,
    *,
    live_macs: Iterable[str] | None = None,
    live_drives: Iterable[Mapping[str, Any]] | None = None,
    image_bytes: int | None = None,
) -> list[Contradiction]:
    """What ``host``'s file says that its evidence contradicts: the committed (or merged)
    inspection ``report``, and what the BMC reports now -- ``live_macs`` (its NICs' MACs),
    ``live_drives`` (drives shaped like the Redfish driver's: ``serial_number``, ``wwn``,
    ``size_bytes``). ``image_bytes``: the target image's size when known (skipped if None)."""
    hardware, redfish = _section(report, "hardware"), _section(report, "redfish")
    out: list[Contradiction] = []

    # MACs. The ephemeral OS lists every NIC it has a driver for; a BMC, those it knows.
    mac_sources: list[tuple[_Source, set[str]]] = []
    for where, items in (("hardware nics", _items(hardware, "nics")),
                         ("redfish nics", _items(redfish, "nics"))):
        macs = sorted({str(i["mac"]).lower() for i in items if i.get("mac")})
        if macs:
            mac_sources.append((_Source(where, tuple(macs)), set(macs)))
    live = sorted({m.lower() for m in live_macs or () if m})
    if live:
        mac_sources.append((_Source("BMC now: nics", tuple(live)), set(live)))
    if mac_sources:
        for i, iface in enumerate(host.interfaces):
            mac = iface.mac.lower()
            if not any(mac in macs for _, macs in mac_sources):
                out.append(Contradiction(host.name, f"interfaces[{i}].mac", mac,
                                         "is not on the server",
                                         _evidence(host.name, [s for s, _ in mac_sources])))

    if host.disk is None:
        return out
    kind = "serial" if host.disk.serial else "wwn"
    wanted = (host.disk.serial or "").strip().casefold() if kind == "serial" else \
        normalise_wwn(host.disk.wwn or "")
    if not wanted:
        return out  # not an identifier the schema lets through: nothing to compare
    shown_value = host.disk.serial if kind == "serial" else host.disk.wwn
    disk_sources: list[tuple[_Source, list[_Disk]]] = []
    hw_disks = [_Disk.of(d.get("serial"), d.get("wwn"), d.get("size_bytes"), d.get("name"))
                for d in _items(hardware, "disks")]
    if hw_disks:  # the OS sees every disk it has a driver for, with or without identifiers
        disk_sources.append((_Source("hardware disks", tuple(d.shown for d in hw_disks)),
                             hw_disks))
    bmc_lists = [("redfish drives", _items(redfish, "drives"))]
    if live_drives is not None:
        bmc_lists.append(("BMC now: drives", [d for d in live_drives if isinstance(d, Mapping)]))
    for where, items in bmc_lists:
        drives = [_Disk.of(d.get("serial_number"), d.get("wwn"), d.get("size_bytes"),
                           d.get("name")) for d in items]
        # A BMC list counts for a serial (WWN) only if it gives serials (WWNs) at all.
        if any(getattr(d, kind) for d in drives):
            disk_sources.append((_Source(where, tuple(d.shown for d in drives)), drives))
    if not disk_sources:
        return out
    field = f"disk.{kind}"
    matches = [d for _, disks in disk_sources for d in disks if getattr(d, kind) == wanted]
    if not matches:
        out.append(Contradiction(host.name, field, str(shown_value), "is not on the server",
                                 _evidence(host.name, [s for s, _ in disk_sources])))
        return out
    sizes = sorted({d.size for d in matches if d.size is not None})
    if image_bytes is not None and sizes and max(sizes) < image_bytes:
        holding = [s for s, disks in disk_sources if any(d in matches for d in disks)]
        out.append(Contradiction(
            host.name, field, str(shown_value),
            f"is {_size(max(sizes))}, smaller than the image ({_size(image_bytes)})",
            _evidence(host.name, holding)))
    return out


def warnings(inventory: Inventory, hosts: Mapping[str, DesiredHost]) -> list[str]:
    """The lines ``validate`` and ``plan`` print as warnings: reports of servers the inventory
    does not have, and every host's contradictions with its report. They change no exit
    status and no plan: a report is evidence, never intent."""
    lines = [f"WARNING {w}" for w in inventory.warnings]
    for name in sorted(hosts):
        report = inventory.inspections.get(name)
        if report is not None:
            lines += [f"WARNING {c}" for c in contradictions(hosts[name], report)]
    return lines


__all__ = ["Contradiction", "contradictions", "warnings"]
