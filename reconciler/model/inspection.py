"""Inspection reports: ``inspection/<server>.yaml``, what inspecting a server found.

The reconciler is their only writer (docs/inventory.md, "Inspection reports"); they never feed
a server's desired state or digests. A report has the server's name and two sections, each
replaced as a whole by the inspection that produces it:

- ``hardware``: in-band, from the ephemeral OS's ``hw-inventory``
  (``images/ephemeral/rootfs/usr/local/bin/hw-inventory``; :func:`hardware_section`);
- ``redfish``: out-of-band, from the BMC (``Bmc.oob_inventory()``; :func:`redfish_section`).

**Canonical.** The same hardware gives the same bytes, so a re-inspection that finds nothing
new makes no commit: keys sorted, lists sorted by identity (NICs by MAC; disks and drives by
serial, then WWN, then name; firmware by name, then version), MACs and WWNs in the canonical
forms of :mod:`reconciler.model.identifiers` (the Redfish driver's too; a WWN that is not one,
like Linux's ``nvme.<vid>-...`` fallback, is left out), text stripped, and nothing that
changes from one boot or
one reading to the next: no timestamps or inspection ids (the time goes in the commit message),
no temperatures, power state or health, no link state or speed, no kernel names of NICs (the
ephemeral OS's naming policy, not the hardware) and no disk device names (``sda`` and
``nvme0n1`` can swap between boots) unless a disk has neither serial nor WWN -- then its name
is its only identity. One link-derived fact is kept, ``hardware.primary_mac`` (which NIC is
cabled), because ``reconciler scaffold`` needs it. ``memory_mib`` is the kernel's MemTotal:
it may move by a few MiB with the ephemeral OS's kernel, whose change is an inspection input
anyway (:data:`reconciler.model.impact.INSPECT_FIELDS`).

**Untrusted.** Both sources are read from machines: every value is type-checked, text is
bounded and printable, lists are bounded, and a wrong shape is a :class:`ReportError` naming
the field. A report file is hostile input like any inventory file (:func:`load`).

**A BMC part that could not be read** (the driver's ``unavailable`` notes: ``drives: HTTP
500``) keeps what the committed report has for that part (:func:`merge`): a BMC hiccup must not
commit "drive removed" today and "drive added" tomorrow.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import yaml

from reconciler.errors import PermanentError
from reconciler.model import identifiers, limits, schema
from reconciler.model.problems import Problem, dotted, sort_problems
from reconciler.model.yamlio import Document, parse

INSPECTION_DIR = "inspection/"
SCHEMA_PATH = "schemas/inventory/inspection.schema.json"
MODELINE = f"# yaml-language-server: $schema=../../{SCHEMA_PATH}"
MAX_TEXT = 256  # characters of one value
MAX_ITEMS = 256  # entries of one list
MAX_SECTION_BYTES = 96 * limits.KiB  # one section as YAML: two fit a file with room to spare
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# hw-inventory reports ``uname -m``; the inventory spells architectures like Debian.
_ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
# hw-inventory's DMI keys -> the report's.
_DMI = {
    "vendor": "vendor", "product": "product", "serial": "serial", "uuid": "uuid", "sku": "sku",
    "family": "family", "boardVendor": "board_vendor", "boardProduct": "board_product",
    "boardSerial": "board_serial", "biosVendor": "bios_vendor", "biosVersion": "bios_version",
    "biosDate": "bios_date",
}  # fmt: skip
# The Redfish driver's dict (Bmc.oob_inventory): section -> its fields (text unless named).
_RF_SYSTEM = ("manufacturer", "model", "serial_number", "sku", "part_number", "uuid",
              "bios_version")
_RF_MANAGER = ("manufacturer", "model", "firmware_version")
_RF_DRIVE = ("name", "model", "serial_number", "wwn", "size_bytes", "protocol", "media_type")
# Parts of the driver's record an ``unavailable`` note ("<part>: <why>") can name.
_RF_PARTS = ("manager", "nics", "drives", "firmware")

Doc = dict[str, Any]


class ReportError(PermanentError):
    """An inspection source or report file with a value of the wrong shape; the message names
    the source and the field."""

    reason = "InspectionReportInvalid"


# --- normalising -----------------------------------------------------------------------------


def normalise_wwn(wwn: str) -> str | None:
    """``0x5000C500A1B2C3D4``, ``naa.5000c500a1b2c3d4``, ``eui.…``, ``50:00:c5:…`` ->
    ``5000c500a1b2c3d4``: :func:`reconciler.model.identifiers.normalise_wwn` (the form the
    Redfish driver reports), None for what is not a WWN. Reports store this form; evidence
    compares a server file's ``disk.wwn`` in it."""
    try:
        return identifiers.normalise_wwn(wwn)
    except ValueError:
        return None


def _where(source: str, path: Sequence[str | int]) -> str:
    return f"{source} {dotted(path)}" if path else source


def _text(value: Any, source: str, path: Sequence[str | int]) -> str | None:
    """Stripped printable text of at most MAX_TEXT characters; None/empty -> None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ReportError(f"{_where(source, path)}: expected text, got {type(value).__name__}")
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_TEXT:
        raise ReportError(f"{_where(source, path)}: more than {MAX_TEXT} characters")
    if _CONTROL.search(value):
        raise ReportError(f"{_where(source, path)}: has control characters")
    return str(value)


def _count(value: Any, source: str, path: Sequence[str | int]) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value >= 1 << 63:
        raise ReportError(f"{_where(source, path)}: expected a count, got {value!r:.40}")
    return value


def _flag(value: Any, source: str, path: Sequence[str | int]) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ReportError(f"{_where(source, path)}: expected true or false, got {value!r:.40}")


def _mac(value: Any, source: str, path: Sequence[str | int]) -> str | None:
    text = _text(value, source, path)
    if text is None:
        return None
    try:
        mac = identifiers.normalise_mac(text)
    except ValueError:
        raise ReportError(f"{_where(source, path)}: {text[:40]!r} is not a MAC address"
                          ) from None
    if mac == "00:00:00:00:00:00":
        return None  # what some BMCs say for a port they know nothing about
    return mac


def _wwn(value: Any, source: str, path: Sequence[str | int]) -> str | None:
    text = _text(value, source, path)
    return normalise_wwn(text) if text is not None else None


def _mapping(value: Any, source: str, path: Sequence[str | int]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ReportError(f"{_where(source, path)}: expected a mapping, got "
                          f"{type(value).__name__}")
    return value


def _list(value: Any, source: str, path: Sequence[str | int]) -> Sequence[Any]:
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ReportError(f"{_where(source, path)}: expected a list, got {type(value).__name__}")
    if len(value) > MAX_ITEMS:
        raise ReportError(f"{_where(source, path)}: more than {MAX_ITEMS} entries")
    return value


def _only(raw: Mapping[str, Any], known: Iterable[str], source: str,
          path: Sequence[str | int]) -> None:
    unknown = sorted(str(k) for k in raw if k not in set(known))
    if unknown:
        raise ReportError(f"{_where(source, path)}: unknown field {unknown[0]!r}")


def _pruned(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Without the values nobody gave (None), keys sorted."""
    return {k: entry[k] for k in sorted(entry) if entry[k] is not None}


def _key(*fields: str) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """Sort key: the identity fields (absent ones first), then every value, so that entries
    equal in identity still sort the same way whatever order they came in."""
    def key(entry: Mapping[str, Any]) -> tuple[Any, ...]:
        ident = tuple((0, "") if entry.get(f) is None else (1, str(entry[f])) for f in fields)
        rest = tuple((k, str(v)) for k, v in sorted(entry.items()))
        return (*ident, rest)
    return key


DISK_KEY = _key("serial", "wwn", "name")
DRIVE_KEY = _key("serial_number", "wwn", "name")
MAC_KEY = _key("mac")
FIRMWARE_KEY = _key("name", "version")
# Where the lists of a report are and how each is ordered (canonical).
_LISTS: dict[tuple[str, str], Callable[[Mapping[str, Any]], tuple[Any, ...]]] = {
    ("hardware", "disks"): DISK_KEY,
    ("hardware", "nics"): MAC_KEY,
    ("redfish", "drives"): DRIVE_KEY,
    ("redfish", "nics"): MAC_KEY,
    ("redfish", "firmware"): FIRMWARE_KEY,
}


def _bounded(section: Doc, source: str) -> Doc:
    size = len(_yaml(section))
    if size > MAX_SECTION_BYTES:
        raise ReportError(f"{source}: the report would take {size:,} bytes, more than "
                          f"{limits.size_text(MAX_SECTION_BYTES)}")
    return section


# --- the two sections ------------------------------------------------------------------------


def _hw_data(inv: Any) -> Mapping[str, Any]:
    """hw-inventory's JSON shape, from that JSON itself (a mapping) or from an object with
    ``HwInventory``'s attributes (``engine/remote.py``; its ``raw`` adds the fields the
    dataclass does not carry: disk model, CPU models, PCI addresses ...)."""
    if isinstance(inv, Mapping):
        return inv
    given = getattr(inv, "raw", None)
    raw: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    raw_disks: list[Any] = raw["disks"] if isinstance(raw.get("disks"), list) else []
    raw_nics: list[Any] = raw["nics"] if isinstance(raw.get("nics"), list) else []
    disks, nics = list(inv.disks), list(inv.nics)

    def extra(items: list[Any], count: int, index: int) -> Mapping[str, Any]:
        # raw lists the same entries in the same order (parse_hw_inventory builds from it)
        item = items[index] if len(items) == count else None
        return item if isinstance(item, Mapping) else {}

    cpus: Mapping[str, Any] = raw["cpus"] if isinstance(raw.get("cpus"), Mapping) else {}
    return {
        "system": dict(inv.system),
        "cpus": {**cpus, "logical": inv.cpu_count},
        "memory": {"totalBytes": inv.memory_bytes},
        "disks": [{**extra(raw_disks, len(disks), i), "name": d.name, "serial": d.serial,
                   "wwn": d.wwn, "sizeBytes": d.size_bytes} for i, d in enumerate(disks)],
        "nics": [{**extra(raw_nics, len(nics), i), "name": n.name, "mac": n.mac,
                  "link": n.link, "driver": n.driver} for i, n in enumerate(nics)],
    }


def hardware_section(inv: Any, *, primary_mac: str | None = None) -> Doc:
    """The report's ``hardware`` section from hw-inventory's output: an object with
    ``HwInventory``'s attributes, or its JSON as a mapping.

    ``primary_mac``: the NIC the reconciler reached the ephemeral OS through, when the caller
    knows it; else the first NIC (hw-inventory lists them by kernel name) that had a link.
    """
    src = "hw-inventory"
    data = _mapping(_hw_data(inv), src, ())
    out: Doc = {}
    system = _mapping(data.get("system"), src, ("system",))
    dmi = {ours: _text(system.get(theirs), src, ("system", theirs))
           for theirs, ours in _DMI.items()}
    if dmi["uuid"]:
        dmi["uuid"] = dmi["uuid"].lower()
    if any(v is not None for v in dmi.values()):
        out["system"] = _pruned(dmi)
    cpus = _mapping(data.get("cpus"), src, ("cpus",))
    models = sorted({m for i, v in enumerate(_list(cpus.get("models"), src, ("cpus", "models")))
                     if (m := _text(v, src, ("cpus", "models", i))) is not None})
    cpu = _pruned({
        "logical": _count(cpus.get("logical"), src, ("cpus", "logical")),
        "cores": _count(cpus.get("cores"), src, ("cpus", "cores")),
        "sockets": _count(cpus.get("sockets"), src, ("cpus", "sockets")),
        "models": models or None,
    })
    if cpu:
        out["cpu"] = cpu
    machine = _text(cpus.get("architecture"), src, ("cpus", "architecture"))
    if machine is not None:
        arch = _ARCHITECTURES.get(machine.lower(), machine.lower())
        if not re.match(r"^[a-z0-9_]{1,32}$", arch):
            raise ReportError(f"{src} cpus.architecture: {machine!r} is not an architecture")
        out["architecture"] = arch
    memory = _mapping(data.get("memory"), src, ("memory",))
    total = _count(memory.get("totalBytes"), src, ("memory", "totalBytes"))
    if total is not None:
        out["memory_mib"] = total // limits.MiB
    disks = []
    for i, raw in enumerate(_list(data.get("disks"), src, ("disks",))):
        where: tuple[str | int, ...] = ("disks", i)
        raw = _mapping(raw, src, where)
        disk = {
            "serial": _text(raw.get("serial"), src, (*where, "serial")),
            "wwn": _wwn(raw.get("wwn"), src, (*where, "wwn")),
            "model": _text(raw.get("model"), src, (*where, "model")),
            "vendor": _text(raw.get("vendor"), src, (*where, "vendor")),
            "size_bytes": _count(raw.get("sizeBytes"), src, (*where, "sizeBytes")),
            "rotational": _flag(raw.get("rotational"), src, (*where, "rotational")),
            "transport": _text(raw.get("transport"), src, (*where, "transport")),
        }
        name = _text(raw.get("name"), src, (*where, "name"))
        if disk["serial"] is None and disk["wwn"] is None:
            disk["name"] = name  # its only identity
        if (kept := _pruned(disk)):
            disks.append(kept)
    if disks:
        out["disks"] = sorted(disks, key=DISK_KEY)
    nics = []
    linked: list[str] = []
    for i, raw in enumerate(_list(data.get("nics"), src, ("nics",))):
        where = ("nics", i)
        raw = _mapping(raw, src, where)
        mac = _mac(raw.get("mac"), src, (*where, "mac"))
        if mac is None:
            continue  # no identity: nothing a server file could name
        if _flag(raw.get("link"), src, (*where, "link")):
            linked.append(mac)
        nics.append(_pruned({
            "mac": mac,
            "driver": _text(raw.get("driver"), src, (*where, "driver")),
            "pci_address": _text(raw.get("pciAddress"), src, (*where, "pciAddress")),
        }))
    if nics:
        out["nics"] = sorted(nics, key=MAC_KEY)
    if primary_mac is not None:
        chosen = _mac(primary_mac, "primary_mac", ())
        if chosen is None or chosen not in {n["mac"] for n in nics}:
            raise ReportError(f"primary_mac {primary_mac!r} is not one of the NICs "
                              "hw-inventory lists")
        out["primary_mac"] = chosen
    elif linked:
        out["primary_mac"] = linked[0]
    return _bounded(out, src)


class RedfishSection(dict[str, Any]):
    """A ``redfish`` section (a plain dict to compare and dump) that also knows which parts
    the BMC could not read this time (``unavailable``): :func:`merge` keeps the committed
    report's reading of those. A copy is a plain dict, which replaces every part."""

    unavailable: frozenset[str] = frozenset()


def redfish_section(raw: Mapping[str, Any]) -> RedfishSection:
    """The report's ``redfish`` section from the Redfish driver's out-of-band inventory::

        {"system": {manufacturer, model, serial_number, sku, part_number, uuid, bios_version},
         "manager": {manufacturer, model, firmware_version},
         "nics": [{mac, name}], "drives": [{name, model, serial_number, wwn, size_bytes,
         protocol, media_type}], "firmware": [{name, version}]}

    A None value is what the BMC did not say: left out. A NIC without a MAC (or with
    00:00:00:00:00:00) is left out; so is an entry with nothing left. ``unavailable`` (the
    driver's notes, ``"<part>: <why>"``) is not part of the section: the parts it names are
    in :attr:`RedfishSection.unavailable`.
    """
    src = "Redfish inventory"
    data = _mapping(raw, src, ())
    _only(data, ("system", "manager", "nics", "drives", "firmware", "unavailable"), src, ())
    unavailable = set()
    for i, note in enumerate(_list(data.get("unavailable"), src, ("unavailable",))):
        if not isinstance(note, str):
            raise ReportError(f"{src} unavailable[{i}]: expected text, got "
                              f"{type(note).__name__}")
        named = note.split(":", 1)[0].strip()
        if named in _RF_PARTS:
            unavailable.add(named)
    out: Doc = {}
    for key, fields in (("system", _RF_SYSTEM), ("manager", _RF_MANAGER)):
        part = _mapping(data.get(key), src, (key,))
        _only(part, fields, src, (key,))
        values = _pruned({f: _text(part.get(f), src, (key, f)) for f in fields})
        if values.get("uuid"):
            values["uuid"] = values["uuid"].lower()
        if values:
            out[key] = values
    nics = []
    for i, item in enumerate(_list(data.get("nics"), src, ("nics",))):
        item = _mapping(item, src, ("nics", i))
        _only(item, ("mac", "name"), src, ("nics", i))
        mac = _mac(item.get("mac"), src, ("nics", i, "mac"))
        if mac is not None:
            nics.append(_pruned({"mac": mac, "name": _text(item.get("name"), src,
                                                           ("nics", i, "name"))}))
    drives = []
    for i, item in enumerate(_list(data.get("drives"), src, ("drives",))):
        where: tuple[str | int, ...] = ("drives", i)
        item = _mapping(item, src, where)
        _only(item, _RF_DRIVE, src, where)
        drive = _pruned({
            f: (_count(item.get(f), src, (*where, f)) if f == "size_bytes"
                else _wwn(item.get(f), src, (*where, f)) if f == "wwn"
                else _text(item.get(f), src, (*where, f)))
            for f in _RF_DRIVE
        })
        if drive:
            drives.append(drive)
    firmware = []
    for i, item in enumerate(_list(data.get("firmware"), src, ("firmware",))):
        item = _mapping(item, src, ("firmware", i))
        _only(item, ("name", "version"), src, ("firmware", i))
        entry = _pruned({f: _text(item.get(f), src, ("firmware", i, f))
                         for f in ("name", "version")})
        if entry:
            firmware.append(entry)
    for key, items, sort in (("nics", nics, MAC_KEY), ("drives", drives, DRIVE_KEY),
                             ("firmware", firmware, FIRMWARE_KEY)):
        if items:
            out[key] = sorted(items, key=sort)
    section = RedfishSection(_bounded(out, src))
    section.unavailable = frozenset(unavailable)
    return section


# --- the report ------------------------------------------------------------------------------


def canonical(doc: Mapping[str, Any]) -> Doc:
    """A copy with every key sorted and every list in its canonical order."""
    out: Doc = copy.deepcopy(_sorted_keys(doc))
    for (section, key), sort in _LISTS.items():
        part = out.get(section)
        if isinstance(part, dict) and isinstance(part.get(key), list):
            part[key] = sorted(part[key], key=sort)
    hw = out.get("hardware")
    if isinstance(hw, dict) and isinstance(hw.get("cpu"), dict) \
            and isinstance(hw["cpu"].get("models"), list):
        hw["cpu"]["models"] = sorted(hw["cpu"]["models"], key=str)
    return out


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _sorted_keys(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [_sorted_keys(v) for v in value]
    return value


def merge(previous: Mapping[str, Any] | None, server: str, *,
          hardware: Mapping[str, Any] | None = None,
          redfish: Mapping[str, Any] | None = None) -> Doc:
    """The report of ``server`` after an inspection: ``previous`` (the committed one, or
    None) with the section(s) given replaced; an out-of-band inspection gives ``redfish``
    alone and leaves ``hardware`` as it was, an in-band one the other way round. A part of a
    :class:`RedfishSection` the BMC could not read keeps ``previous``'s reading of it."""
    if previous is not None and previous.get("server") != server:
        raise ValueError(f"the previous report is of {previous.get('server')!r}, not {server!r}")
    doc: Doc = {"server": server}
    for key, given in (("hardware", hardware), ("redfish", redfish)):
        if given is not None:
            doc[key] = dict(given)
        elif previous is not None and isinstance(previous.get(key), Mapping):
            doc[key] = previous[key]
    old = previous.get("redfish") if previous is not None else None
    if isinstance(redfish, RedfishSection) and isinstance(old, Mapping):
        for part in redfish.unavailable:
            doc["redfish"].pop(part, None)
            if part in old:
                doc["redfish"][part] = old[part]
    return canonical(doc)


class _Dumper(yaml.SafeDumper):
    """Block style with list items indented under their key, like the inventory's files."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
        return super().increase_indent(flow, False)


def _yaml(value: Any) -> str:
    text: str = yaml.dump(value, Dumper=_Dumper, sort_keys=True, default_flow_style=False,
                          allow_unicode=True, width=4096, indent=2)
    return text


def dump(doc: Mapping[str, Any]) -> str:
    """The report file's text: the modeline, a header, canonical YAML. The same report (in
    any key or list order) gives the same bytes."""
    name = doc.get("server")
    header = [
        MODELINE,
        f"# What inspecting {name} found. Written by the reconciler: do not edit.",
        f"# `reconciler scaffold {name}` prints a server file filled from it.",
    ]
    return "\n".join(header) + "\n" + _yaml(canonical(doc))


def report_path(server: str) -> str:
    """The report's path in the inventory: ``inspection/<server>.yaml``."""
    return f"{INSPECTION_DIR}{server}.yaml"


def report_name(path: str) -> str | None:
    """The server a path under ``inspection/`` is the report of (``inspection/<name>.yaml``,
    nothing deeper), else None."""
    if not path.startswith(INSPECTION_DIR) or not path.endswith(".yaml"):
        return None
    name = path[len(INSPECTION_DIR):-len(".yaml")]
    return None if "/" in name else name


def check(doc: Document, name: str) -> bool:
    """What the schema cannot say about a report that passed it: it names its own file's
    server. Problems go to ``doc``; returns whether there were none."""
    ok = True
    if not _NAME.match(name):
        doc.problems.append(Problem(doc.file, None, "", f"file name {name!r} is not a valid "
                                    "host name (lower-case letters, digits and '-')"))
        ok = False
    elif doc.data.get("server") != name:
        doc.problems.append(doc.problem(("server",), f"{doc.data.get('server')!r} is not this "
                                        f"file's server {name!r}"))
        ok = False
    return ok


def load(text: str | bytes, file: str) -> Doc:
    """Parse and check one report file (hostile input: the inventory's size, alias, nesting
    and secret rules, then the schema and :func:`check`). Raises :class:`ReportError` naming
    the file, line and field of each problem."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > limits.MAX_FILE_BYTES:
        raise ReportError(f"{file}: file is {len(raw):,} bytes, more than the limit of "
                          f"{limits.size_text(limits.MAX_FILE_BYTES)}")
    doc = parse(file, raw)
    if not doc.problems:
        hide = frozenset(schema.find_secrets(doc))
        if schema.validate(doc, "inspection", hide=hide) and not hide:
            name = report_name(file) or file.rsplit("/", 1)[-1].removesuffix(".yaml")
            check(doc, name)
    if doc.problems:
        shown = sort_problems(doc.problems)
        more = f" (and {len(shown) - 5} more)" if len(shown) > 5 else ""
        raise ReportError("; ".join(str(p) for p in shown[:5]) + more)
    data: Doc = doc.data
    return data


# --- what changed ----------------------------------------------------------------------------

# Lists whose entries have an identity: (section, key) -> (label, identity of an entry).
_ENTITY: dict[tuple[str, str], tuple[str, Callable[[Mapping[str, Any]], str]]] = {
    ("hardware", "disks"): ("disk", lambda d: str(d.get("serial") or d.get("wwn")
                                                  or d.get("name") or "?")),
    ("hardware", "nics"): ("NIC", lambda n: str(n.get("mac"))),
    ("redfish", "drives"): ("drive", lambda d: str(d.get("serial_number") or d.get("wwn")
                                                   or d.get("name") or "?")),
    ("redfish", "nics"): ("NIC", lambda n: str(n.get("mac"))),
    ("redfish", "firmware"): ("firmware", lambda f: str(f.get("name") or "?")),
}
MAX_CHANGES = 6  # per section in one line, then "N more"


def _short(value: Any) -> str:
    text = "none" if value is None else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _entities(section: str, key: str, items: Any) -> dict[str, list[Mapping[str, Any]]]:
    label_of = _ENTITY[(section, key)][1]
    out: dict[str, list[Mapping[str, Any]]] = {}
    for item in items if isinstance(items, list) else ():
        if isinstance(item, Mapping):
            out.setdefault(label_of(item), []).append(item)
    return out


def _section_changes(section: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    changes: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if (section, key) in _ENTITY:
            label = _ENTITY[(section, key)][0]
            ea, eb = _entities(section, key, a), _entities(section, key, b)
            for ident in sorted(set(ea) | set(eb)):
                xa, xb = ea.get(ident), eb.get(ident)
                if xa == xb:
                    continue
                if xa is None:
                    changes.append(f"{label} {_short(ident)} added")
                elif xb is None:
                    changes.append(f"{label} {_short(ident)} removed")
                elif len(xa) == len(xb) == 1:
                    fields = sorted(set(xa[0]) | set(xb[0]))
                    changes += [f"{label} {_short(ident)} {f} {_short(xa[0].get(f))} -> "
                                f"{_short(xb[0].get(f))}"
                                for f in fields if xa[0].get(f) != xb[0].get(f)]
                else:
                    changes.append(f"{label} {_short(ident)} changed")
        elif isinstance(a, Mapping) or isinstance(b, Mapping):
            a = a if isinstance(a, Mapping) else {}
            b = b if isinstance(b, Mapping) else {}
            prefix = "" if key == "system" else f"{key} "
            changes += [f"{prefix}{f} {_short(a.get(f))} -> {_short(b.get(f))}"
                        for f in sorted(set(a) | set(b)) if a.get(f) != b.get(f)]
        else:
            changes.append(f"{key} {_short(a)} -> {_short(b)}")
    return changes


def _summary(section: str, part: Mapping[str, Any]) -> str:
    counts = []
    for (sec, key), (label, _) in _ENTITY.items():
        items = part.get(key)
        if sec == section and isinstance(items, list) and items:
            plural = "s" if len(items) != 1 and label != "firmware" else ""
            counts.append(f"{len(items)} {label}{plural}")
    return f" ({', '.join(counts)})" if counts else ""


def describe_change(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """One line for a commit message: ``hardware: new (1 disk, 2 NICs)``,
    ``redfish: drive QM0001 added; bios_version 1.0 -> 1.2``; ``no change``."""
    parts: list[str] = []
    for section in ("hardware", "redfish"):
        a = old.get(section) if old is not None else None
        b = new.get(section)
        if a == b:
            continue
        if not isinstance(a, Mapping):
            parts.append(f"{section}: new" + (_summary(section, b) if isinstance(b, Mapping)
                                              else ""))
            continue
        if not isinstance(b, Mapping):
            parts.append(f"{section}: removed")
            continue
        changes = _section_changes(section, a, b) or ["reordered"]
        if len(changes) > MAX_CHANGES:
            changes = changes[:MAX_CHANGES] + [f"{len(changes) - MAX_CHANGES} more"]
        parts.append(f"{section}: " + "; ".join(changes))
    return "; ".join(parts) if parts else "no change"


__all__ = [
    "INSPECTION_DIR", "MODELINE", "ReportError", "canonical", "check", "describe_change",
    "dump", "hardware_section", "load", "merge", "normalise_wwn", "redfish_section",
    "report_name", "report_path",
]
