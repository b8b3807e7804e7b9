"""``reconciler scaffold SERVER``: a server file filled from the server's inspection report.

The workflow it completes (docs/inventory.md, "From BMC to provisioned"): commit a server file
with only its BMC and ``state: inspected``; the reconciler inspects the server and commits
``inspection/<server>.yaml``; ``reconciler scaffold`` prints the server file again with what
the report found -- the primary NIC's MAC, the target disk by WWN or serial, the architecture
-- and comments saying what to review; the operator reviews it, sets ``state: provisioned``
and commits.

Pure: the current file's data and the report in, YAML text out. The current file's settings
are kept (``profile``, ``state``, ``bmc``, ``image``, ``cloud_init`` ...), and so are its
interfaces and disk where the report confirms them; what the report contradicts is replaced
and said so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from reconciler.model.inspection import normalise_wwn

SERVER_MODELINE = "# yaml-language-server: $schema=../../schemas/inventory/server.schema.json"
ARCHITECTURES = ("amd64", "arm64")
# The server schema's forms: disk.serial, disk.wwn (0x + 16 or 32 hex digits).
_SERIAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_WWN_HEX = re.compile(r"^([0-9a-f]{16}|[0-9a-f]{32})$")
# Fields written from the report (or confirmed by it); the others are the current file's.
_FILLED = ("architecture", "interfaces", "disk")
# The order fields are written in (the current file's order for any other).
_ORDER = ("profile", "state", "protected", "suspend", "inspect_generation", "architecture",
          "bmc", "interfaces", "disk", "image", "cloud_init")


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
        return super().increase_indent(flow, False)


def _block(key: str, value: Any) -> list[str]:
    text: str = yaml.dump({key: value}, Dumper=_Dumper, sort_keys=False,
                          default_flow_style=False, allow_unicode=True, width=4096, indent=2)
    return text.rstrip("\n").split("\n")


def _size(n: Any) -> str:
    return f"{n / (1 << 30):.1f} GiB" if isinstance(n, int) else "size unknown"


def _section(report: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    part = report.get(name)
    return part if isinstance(part, Mapping) else {}


def _items(part: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = part.get(key)
    return [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []


def _disk_id(serial: Any, wwn: Any) -> dict[str, str] | None:
    """``disk`` for the server file: by WWN when it has the schema's form, else by serial."""
    canonical = normalise_wwn(wwn) if isinstance(wwn, str) else None
    if canonical is not None and _WWN_HEX.match(canonical):
        return {"wwn": "0x" + canonical}
    if isinstance(serial, str) and _SERIAL.match(serial):
        return {"serial": serial}
    return None


def _candidates(report: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The disks to choose from, in one shape: the in-band list when there is one (the OS
    sees every disk), else the BMC's drives."""
    hardware = _items(_section(report, "hardware"), "disks")
    if hardware:
        return "hardware disks", [
            {"serial": d.get("serial"), "wwn": d.get("wwn"), "size": d.get("size_bytes"),
             "model": d.get("model"), "rotational": d.get("rotational"),
             "usb": d.get("transport") == "usb", "name": d.get("name")} for d in hardware]
    drives = _items(_section(report, "redfish"), "drives")
    return "redfish drives", [
        {"serial": d.get("serial_number"), "wwn": d.get("wwn"), "size": d.get("size_bytes"),
         "model": d.get("model"), "rotational": d.get("media_type") == "HDD", "usb": False,
         "name": d.get("name")} for d in drives]


def _describe_disk(d: Mapping[str, Any]) -> str:
    names = [f"{k} {d[k]}" for k in ("serial", "wwn") if d.get(k)]
    ident = ", ".join(names) or f"name {d.get('name') or '?'}"
    kind = "HDD" if d.get("rotational") else "SSD/virtual"
    return f"{ident}, {_size(d.get('size'))}, {d.get('model') or 'model unknown'}, {kind}" + (
        ", USB" if d.get("usb") else "")


def _choose_disk(disks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The likeliest system disk: not USB, solid state before spinning, then the smallest,
    among those the server file can name (serial or WWN)."""
    usable = [d for d in disks if _disk_id(d.get("serial"), d.get("wwn")) is not None]
    if not usable:
        return None
    return min(usable, key=lambda d: (bool(d.get("usb")), bool(d.get("rotational")),
                                      d.get("size") if isinstance(d.get("size"), int)
                                      else 1 << 62,
                                      str(d.get("serial") or d.get("wwn"))))


def _primary_mac(report: Mapping[str, Any]) -> tuple[str | None, str]:
    """The primary interface's MAC and why it was chosen."""
    hardware, redfish = _section(report, "hardware"), _section(report, "redfish")
    if isinstance(hardware.get("primary_mac"), str):
        return hardware["primary_mac"], ("the NIC the in-band inspection found cabled "
                                         "(hardware.primary_mac)")
    rf = [str(n["mac"]) for n in _items(redfish, "nics") if n.get("mac")]
    if rf:
        return rf[0], "the BMC's first NIC (by MAC): no in-band inspection says which is cabled"
    hw = [str(n["mac"]) for n in _items(hardware, "nics") if n.get("mac")]
    if hw:
        return hw[0], "the first NIC (by MAC): the inspection recorded no link"
    return None, ""


def scaffold(name: str, current: Mapping[str, Any], report: Mapping[str, Any], *,
             subnets: Sequence[str] = (), modeline: str = SERVER_MODELINE) -> str:
    """The server file of ``name``: ``current`` (its file's data) with interfaces, disk and
    architecture filled from ``report``. ``subnets``: the inventory's subnet names (with
    exactly one, the new primary interface gets it and an automatic address)."""
    hardware, redfish = _section(report, "hardware"), _section(report, "redfish")
    known_macs = {str(n["mac"]).lower() for n in _items(hardware, "nics") + _items(redfish, "nics")
                  if n.get("mac")}
    notes: list[str] = []
    fields: dict[str, tuple[list[str], Any]] = {}  # key -> (comment lines, value)

    arch = hardware.get("architecture")
    if isinstance(arch, str) and arch in ARCHITECTURES:
        fields["architecture"] = ([f"from the in-band inspection (hw-inventory: {arch})"], arch)
    elif "architecture" in current:
        fields["architecture"] = (["kept: the report does not say"], current["architecture"])

    # interfaces: keep the current ones the server has; else one primary interface.
    kept: list[tuple[int, Mapping[str, Any]]] = []
    dropped: list[tuple[int, Mapping[str, Any]]] = []
    for i, written in enumerate(current.get("interfaces") or ()):
        mac = str(written.get("mac", "")).lower()
        (kept if not known_macs or mac in known_macs else dropped).append((i, written))
    comments = [f"dropped: interfaces[{i}].mac {written.get('mac')} is not on the server"
                for i, written in dropped]
    if kept:
        confirm = ("kept: the report confirms these MACs" if known_macs else
                   "kept: the report lists no NIC to check them against")
        fields["interfaces"] = (comments + [confirm], [written for _, written in kept])
    else:
        primary, why = _primary_mac(report)
        if primary is not None:
            iface: dict[str, Any] = {"mac": primary}
            comments.append(f"primary: {why}")
            others = sorted(known_macs - {primary})
            if others:
                comments.append("other NICs (add any this server should configure): "
                                + ", ".join(others))
            bmc = current.get("bmc") or {}
            if len(subnets) == 1 and bmc.get("system_id"):
                iface.update(subnet=subnets[0], address="auto")
                comments.append(f"address: auto allocates from subnet {subnets[0]}; "
                                "or write a static address")
            else:
                choice = f"one of {', '.join(subnets)}" if subnets else "a subnet"
                comments.append(f"before state: provisioned, add subnet: ({choice}) and "
                                "address: auto (needs bmc.system_id) or a static address")
            fields["interfaces"] = (comments, [iface])
        else:
            notes.append("interfaces: the report lists no NIC")

    # disk: keep the current one if the report has it; else choose.
    source, disks = _candidates(report)
    listing = [f"  {_describe_disk(d)}" for d in disks]
    disk = current.get("disk")
    confirmed = False
    if isinstance(disk, Mapping) and disks:
        serial, wwn = disk.get("serial"), disk.get("wwn")
        wanted = normalise_wwn(str(wwn)) if wwn else None
        confirmed = any((serial and d.get("serial") == serial)
                        or (wanted and d.get("wwn") and normalise_wwn(str(d["wwn"])) == wanted)
                        for d in disks)
    if confirmed:
        fields["disk"] = ([f"kept: the report's {source} have it"], dict(disk or {}))
    else:
        chosen = _choose_disk(disks)
        if chosen is not None:
            value = _disk_id(chosen.get("serial"), chosen.get("wwn"))
            reasons = [f"the disk the image is written to (state: provisioned wipes it): "
                       f"{_describe_disk(chosen)}"]
            if isinstance(disk, Mapping):
                reasons.insert(0, f"replaced: {dict(disk)} is not among the report's {source}")
            if len(disks) > 1:
                reasons += [f"chosen among the {source} (not USB, solid state first, then "
                            "the smallest):", *listing]
            fields["disk"] = (reasons, value)
        elif disks:
            notes += [f"disk: no disk of the report's {source} has a serial or WWN a server "
                      "file can name:", *listing]
        else:
            notes.append("disk: the report lists no disk")
        if chosen is None and isinstance(disk, Mapping):
            fields["disk"] = (["kept, but the report does not confirm it"], dict(disk))

    lines = [modeline if modeline.startswith("# yaml-language-server:") else SERVER_MODELINE,
             f"# {name}: scaffolded from inspection/{name}.yaml by `reconciler scaffold`.",
             "# Review every commented value. Then set state: provisioned and commit: the",
             "# reconciler writes the image to the disk below (wiping it).",
             *[f"# {n}" for n in notes]]
    order = [k for k in _ORDER if k in current or k in fields]
    order += [k for k in current if k not in order]
    for key in order:
        if key in fields:
            comment, value = fields[key]
            lines += [f"# {c}" for c in comment]
        elif key in _FILLED:
            continue
        else:
            value = current[key]
        lines += _block(key, value)
    return "\n".join(lines) + "\n"


__all__ = ["SERVER_MODELINE", "scaffold"]
