"""The inventory: frozen dataclasses built from the repository's YAML, and every check on it.

Repository layout (see docs/inventory.md)::

    subnets.yaml            subnets: CIDR, gateway, DNS, reserved ranges
    profiles.yaml           base_artifacts per architecture, and named profiles
    servers/**/<name>.yaml  one file per server; the file name is the server's name
    reconciler.yaml         optional: the loop's policy (reconciler.model.policy)
    templates/*.j2          optional: override the project's templates/ of the same name
    inspection/<name>.yaml  written by the reconciler: what inspecting a server found
                            (reconciler.model.inspection); never part of a desired state

:func:`parse_inventory` is pure: it takes the files as bytes, so the same code validates a
working tree, a git revision, or test data.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import MappingProxyType
from typing import Any

from reconciler.model import inspection, ipam, limits, schema
from reconciler.model.bulk import paused_gc
from reconciler.model.policy import POLICY_FILE, Policy
from reconciler.model.problems import Problem, dotted, sort_problems
from reconciler.model.yamlio import Document, forget_lines, parse

SUBNETS_FILE = "subnets.yaml"
PROFILES_FILE = "profiles.yaml"
SERVERS_DIR = "servers/"
TEMPLATES_DIR = "templates/"
INSPECTION_DIR = inspection.INSPECTION_DIR
STATES = ("provisioned", "inspected", "off", "unmanaged")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Reserved:
    start: IPv4Address
    end: IPv4Address
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Subnet:
    name: str
    network: IPv4Network
    gateway: IPv4Address
    dns: tuple[IPv4Address, ...] = ()
    reserved: tuple[Reserved, ...] = ()

    def reserved_reason(self, address: IPv4Address) -> str | None:
        for r in self.reserved:
            if r.start <= address <= r.end:
                return r.reason or "reserved range"
        return None


@dataclass(frozen=True, slots=True)
class Image:
    url: str
    sha256: str


@dataclass(frozen=True, slots=True)
class CloudInit:
    ssh_keys: tuple[str, ...] = ()
    user_data: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    architecture: str
    kernel: str
    initramfs: str
    cmdline: str
    boot_method: str
    image: Image | None = None
    cloud_init: CloudInit = CloudInit()


@dataclass(frozen=True, slots=True)
class Bmc:
    address: str  # as written
    scheme: str  # http or https
    host: str  # host[:port]: the seed's bmc_host, part of the IPAM key
    credentials: str
    system_id: str | None = None
    boot_method: str | None = None
    verify_tls: bool = True
    ca_bundle: str | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"


@dataclass(frozen=True, slots=True)
class Interface:
    name: str
    mac: str  # lower case
    mode: str  # static | auto | dhcp
    subnet: str | None = None
    address: IPv4Address | None = None  # static only


@dataclass(frozen=True, slots=True)
class Disk:
    serial: str | None = None
    wwn: str | None = None


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    file: str
    profile: str
    state: str
    bmc: Bmc
    protected: bool = False
    architecture: str | None = None
    interfaces: tuple[Interface, ...] = ()
    disk: Disk | None = None
    image: Image | None = None
    cloud_init: CloudInit = CloudInit()
    suspend: bool = False
    inspect_generation: int = 0


@dataclass(frozen=True, slots=True)
class Inventory:
    """Everything that validated. ``rejected`` servers had problems: leave them alone."""

    subnets: Mapping[str, Subnet] = field(default_factory=lambda: _EMPTY)
    profiles: Mapping[str, Profile] = field(default_factory=lambda: _EMPTY)
    base_artifacts: Mapping[str, tuple[frozenset[str], frozenset[str]]] = field(
        default_factory=lambda: _EMPTY
    )
    servers: Mapping[str, Server] = field(default_factory=lambda: _EMPTY)
    rejected: frozenset[str] = frozenset()
    policy: Policy = Policy()
    # The inventory's template overrides: file name -> text.
    templates: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    allocation: ipam.Allocation = field(
        default_factory=lambda: ipam.Allocation({}, (), ())
    )
    seniority: tuple[str, ...] = ()  # server names, most senior first (IPAM order)
    # Server name -> its memo entry (desired_hosts reuses hosts built from the same inputs).
    built: Mapping[str, Built] = field(default_factory=lambda: _EMPTY, compare=False,
                                       repr=False)
    # Server name -> its inspection report (inspection/<name>.yaml, schema-valid; plain data:
    # do not modify). Reports never change a desired state; see reconciler.model.evidence.
    inspections: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: _EMPTY)
    # Worth saying but not wrong: a report of a server the inventory does not have.
    warnings: tuple[Problem, ...] = ()

    @property
    def templates_digest(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.templates):
            h.update(f"{name}\0{self.templates[name]}\0".encode())
        return h.hexdigest()


@dataclass(slots=True)
class Parsed:
    """One file's parse, secret scan and schema check (a :data:`ParseCache` entry), and the
    models built from it. Everything here is a pure function of the file's kind, path and bytes
    (``built``: and of the context key it is stored under), so sharing it is exact."""

    text: str
    data: Any
    problems: tuple[Problem, ...]
    ok: bool
    built: dict[Any, Built] = field(default_factory=dict)
    nodes: int = 0  # what its data costs to hold (Document.nodes)


@dataclass(slots=True)
class Built:
    """What a file's checks produced in one context: the model (a Server, or the subnets or
    profiles tables), the problems the checks added, and desired hosts derived from it (keyed by
    assigned addresses and templates digest, checked against the identity of the profile and
    subnets they were made with; see :func:`reconciler.model.desired_hosts`)."""

    model: Any
    problems: tuple[Problem, ...]
    hosts: dict[Any, Any] = field(default_factory=dict)


# (kind, path, bytes) -> Parsed. Share one between calls (two revisions) to parse, check and
# build each distinct file once.
ParseCache = dict[tuple[str, str, bytes], Parsed]


@dataclass(slots=True)
class _Run:
    """Mutable state of one parse (problems, per-file docs)."""

    docs: dict[str, Document] = field(default_factory=dict)
    entries: dict[str, Parsed] = field(default_factory=dict)
    rejected: set[str] = field(default_factory=set)
    loose: list[Problem] = field(default_factory=list)
    refused: frozenset[str] = frozenset()  # files the reader did not read
    nodes: int = 0  # YAML nodes of the files parsed so far (limits.MAX_YAML_NODES)
    cache: ParseCache = field(default_factory=dict)


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _cloud_init(raw: Mapping[str, Any] | None) -> CloudInit:
    raw = raw or {}
    return CloudInit(tuple(raw.get("ssh_keys") or ()), _freeze(raw.get("user_data") or {}))


def _image(raw: Mapping[str, Any] | None) -> Image | None:
    return Image(raw["url"], raw["sha256"]) if raw else None


def _load_doc(run: _Run, files: Mapping[str, bytes], name: str, kind: str) -> Document | None:
    """Parse, secret scan and schema check one file (memoized on its path and content)."""
    raw = files.get(name)
    if raw is None:
        if name not in run.refused:
            run.loose.append(Problem(name, None, "", "file is missing"))
        return None
    if run.nodes > limits.MAX_YAML_NODES:
        return None  # the first file over the budget says so
    key = (kind, name, raw)
    entry = run.cache.get(key)
    if entry is not None:
        doc = Document(name, entry.text, entry.data, list(entry.problems), entry.nodes)
    else:
        doc = parse(name, raw)
        ok = not doc.problems
        if ok:
            hide = frozenset(schema.find_secrets(doc))
            ok = schema.validate(doc, kind, hide=hide) and not hide
        _cap(doc)
        entry = run.cache[key] = Parsed(doc.text, doc.data, tuple(doc.problems), ok,
                                        nodes=doc.nodes)
    run.nodes += entry.nodes
    if run.nodes > limits.MAX_YAML_NODES:
        # Parsed data takes 150-350 bytes a node: this is what bounds the memory of a run.
        run.loose.append(Problem(name, None, "", "the inventory's YAML files together have "
                                 f"more than {limits.MAX_YAML_NODES:,} values: this file and "
                                 "the rest are not read"))
        return None
    run.docs[name] = doc
    run.entries[name] = entry
    return doc if entry.ok else None


def _cap(doc: Document) -> None:
    """At most MAX_PROBLEMS_PER_FILE problems of one file, then one line saying so: a file of
    thousands of mistakes (or of a hostile pull request) gives a readable report."""
    if len(doc.problems) > limits.MAX_PROBLEMS_PER_FILE:
        del doc.problems[limits.MAX_PROBLEMS_PER_FILE:]
        doc.problems.append(Problem(doc.file, None, "", "more problems in this file are not "
                                    f"shown (the first {limits.MAX_PROBLEMS_PER_FILE} are)"))


def _built(run: _Run, doc: Document, context: Any, build: Callable[..., Any], *args: Any) -> Built:
    """``build(*args)`` once per file content and ``context`` (a key for everything else
    ``build`` reads); the problems it adds to ``doc`` are replayed on a memo hit."""
    entry = run.entries[doc.file]
    done = entry.built.get(context)
    if done is None:
        before = len(doc.problems)
        model = build(*args)
        done = entry.built[context] = Built(model, tuple(doc.problems[before:]))
    else:
        doc.problems.extend(done.problems)
    return done


def _subnets(doc: Document) -> dict[str, Subnet]:
    out: dict[str, Subnet] = {}
    for name, raw in doc.data["subnets"].items():
        where = ("subnets", name)
        try:
            net = IPv4Network(raw["cidr"])
        except ValueError:
            doc.problems.append(doc.problem((*where, "cidr"),
                                            f"{raw['cidr']!r} has host bits set"))
            continue
        gateway = IPv4Address(raw["gateway"])
        bad = False
        edge = () if net.prefixlen >= 31 else (net.network_address, net.broadcast_address)
        if gateway not in net or gateway in edge:  # RFC 3021: a /31 has no network address
            doc.problems.append(doc.problem((*where, "gateway"),
                                            f"{gateway} is not a host address of {net}"))
            bad = True
        reserved = []
        for i, r in enumerate(raw.get("reserved") or ()):
            start, end = IPv4Address(r["start"]), IPv4Address(r["end"])
            if start not in net or end not in net or start > end:
                doc.problems.append(doc.problem((*where, "reserved", i),
                                                f"{start}-{end} is not a range inside {net}"))
                bad = True
            reserved.append(Reserved(start, end, r.get("reason", "")))
        if not bad:
            dns = tuple(IPv4Address(a) for a in raw.get("dns") or ())
            out[name] = Subnet(name, net, gateway, dns, tuple(reserved))
    return out


def _profiles(
    doc: Document,
) -> tuple[dict[str, Profile], dict[str, tuple[frozenset[str], frozenset[str]]]]:
    data = doc.data
    arts = {
        arch: (frozenset(v.get("kernels") or ()), frozenset(v.get("initramfs") or ()))
        for arch, v in (data.get("base_artifacts") or {}).items()
    }
    out: dict[str, Profile] = {}
    for name, raw in data["profiles"].items():
        where = ("profiles", name)
        kernels, initrds = arts.get(raw["architecture"], (frozenset(), frozenset()))
        bad = False
        for key, known in (("kernel", kernels), ("initramfs", initrds)):
            if raw[key] not in known:
                doc.problems.append(doc.problem(
                    (*where, key),
                    f"unknown base artifact {raw[key]!r} "
                    f"(not in base_artifacts.{raw['architecture']}.{_plural(key)})"))
                bad = True
        if not bad:
            out[name] = Profile(name, raw["architecture"], raw["kernel"], raw["initramfs"],
                                raw["cmdline"], raw["boot_method"], _image(raw.get("image")),
                                _cloud_init(raw.get("cloud_init")))
    return out, arts


def _plural(key: str) -> str:
    return "kernels" if key == "kernel" else "initramfs"


def _bmc(raw: Mapping[str, Any]) -> Bmc:
    address = raw["address"].rstrip("/")
    scheme, sep, host = address.partition("://")
    if not sep:
        scheme, host = "https", address
    return Bmc(raw["address"], scheme, host, raw["credentials"], raw.get("system_id"),
               raw.get("boot_method"), raw.get("verify_tls", True), raw.get("ca_bundle"))


def _server(
    doc: Document,
    name: str,
    subnets: Mapping[str, Subnet],
    profiles: Mapping[str, Profile],
    arts: Mapping[str, tuple[frozenset[str], frozenset[str]]],
    declared: Mapping[str, frozenset[str] | None],
) -> Server | None:
    """Check one server. ``declared``: subnet/profile names the shared files declare (None
    when that file could not be read), so a reference to a declared-but-invalid entry is not
    reported twice -- its problem is in the shared file."""
    data = doc.data
    errors: list[Problem] = []

    def bad(path: tuple[str | int, ...], message: str) -> None:
        errors.append(doc.problem(path, message))

    bmc = _bmc(data["bmc"])
    known_profiles, known_subnets = declared["profiles"], declared["subnets"]
    profile_name = data.get("profile", "default")
    profile = profiles.get(profile_name)
    if profile is None and known_profiles is not None and profile_name not in known_profiles:
        if "profile" in data:
            bad(("profile",), f"unknown profile {profile_name!r}")
        else:
            bad((), "no profile given and profiles.yaml defines no 'default' profile")
    arch = data.get("architecture") or (profile.architecture if profile else None)
    if profile is not None and arch != profile.architecture:
        kernels, initrds = arts.get(arch or "", (frozenset(), frozenset()))
        for key, known in (("kernel", kernels), ("initramfs", initrds)):
            value = getattr(profile, key)
            if value not in known:
                bad(("architecture",), f"profile {profile_name!r} {key} {value!r} is not a "
                    f"base artifact for {arch} (base_artifacts.{arch}.{_plural(key)})")
    interfaces: list[Interface] = []
    for i, raw in enumerate(data.get("interfaces") or ()):
        where = ("interfaces", i)
        iname = raw.get("name", f"eth{i}")
        written = raw.get("address", "dhcp")
        mode = written if written in ("auto", "dhcp") else "static"
        subnet_name = raw.get("subnet")
        subnet = subnets.get(subnet_name) if subnet_name else None
        address = IPv4Address(written) if mode == "static" else None
        if subnet_name and known_subnets is not None and subnet_name not in known_subnets:
            bad((*where, "subnet"), f"unknown subnet {subnet_name!r}")
        elif subnet_name and subnet is None:
            pass  # declared but invalid: reported in subnets.yaml
        elif mode != "dhcp" and not subnet_name:
            bad((*where, "subnet"), f"a {mode} address needs a subnet")
        elif subnet is not None and address is not None:
            net = subnet.network
            if address not in net:
                bad((*where, "address"), f"{address} is outside subnet {subnet_name} ({net})")
            elif address == net.network_address:
                bad((*where, "address"), f"{address} is the network address of {net}")
            elif address == net.broadcast_address:
                bad((*where, "address"), f"{address} is the broadcast address of {net}")
            elif address == subnet.gateway:
                bad((*where, "address"), f"{address} is the gateway of subnet {subnet_name}")
            elif (why := subnet.reserved_reason(address)) is not None:
                bad((*where, "address"), f"{address} is in a reserved range ({why})")
        elif subnet is not None and mode == "auto":
            if subnet.network.prefixlen > ipam.SMALLEST_PREFIX_FOR_AUTO:
                bad((*where, "address"), f"subnet {subnet_name} ({subnet.network}) is too "
                    f"small to allocate from (prefix longer than /{ipam.SMALLEST_PREFIX_FOR_AUTO})")
            if not bmc.system_id:
                bad((*where, "address"), "auto needs bmc.system_id (part of the IPAM key)")
        interfaces.append(Interface(iname, raw["mac"].lower(), mode, subnet_name, address))
    seen_names = [i.name for i in interfaces]
    for i, iface in enumerate(interfaces):
        if seen_names.index(iface.name) != i:
            bad(("interfaces", i, "name"), f"duplicate interface name {iface.name!r}")
    disk = Disk(data["disk"].get("serial"), data["disk"].get("wwn")) if "disk" in data else None
    image = _image(data.get("image")) or (profile.image if profile else None)
    state = data["state"]
    if state == "provisioned":
        if disk is None:
            bad(("disk",), "state provisioned needs a target disk (serial or wwn)")
        if image is None and profile is not None:
            bad(("image",), f"state provisioned needs an image (here or in profile "
                f"{profile_name!r})")
        if not any(i.mode != "dhcp" for i in interfaces):
            bad(("interfaces",), "state provisioned needs an interface with a static or auto "
                "address (the reconciler reaches the server there)")
    doc.problems.extend(errors)
    unresolved = any(i.subnet is not None and i.subnet not in subnets for i in interfaces)
    if errors or profile is None or unresolved:
        return None
    return Server(name, doc.file, profile_name, state, bmc, bool(data.get("protected", False)),
                  data.get("architecture"), tuple(interfaces), disk, image,
                  _cloud_init(data.get("cloud_init")), bool(data.get("suspend", False)),
                  int(data.get("inspect_generation", 0)))


def server_files(files: Mapping[str, bytes]) -> dict[str, str]:
    """Server file path -> server name, for servers/**/*.yaml|yml."""
    out = {}
    for path in files:
        if path.startswith(SERVERS_DIR) and path.endswith((".yaml", ".yml")):
            out[path] = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return out


def parse_inventory(
    files: Mapping[str, bytes],
    *,
    seniority: Mapping[str, int] | None = None,
    cache: ParseCache | None = None,
    refused: Iterable[Problem] = (),
) -> tuple[Inventory, list[Problem]]:
    """Build the inventory from ``files`` (repository-relative POSIX path -> content).

    ``seniority`` maps a server name to its rank (lower = added earlier); servers missing from
    it come after all ranked ones, by name. It orders IPAM claims (see :mod:`.ipam`).
    Returns every problem found, sorted; problem-free servers are usable even when others fail.
    ``cache``: share one dict between calls (two revisions) to parse each distinct file once.
    ``refused``: a problem for each file the reader did not read (a symlink, over a limit;
    :func:`read_worktree`, ``GitInventory.snapshot``): reported, and a server whose file it is
    is rejected, not taken for removed.
    """
    with paused_gc():
        return _parse_inventory(files, seniority, cache, tuple(refused))


def _parse_inventory(
    files: Mapping[str, bytes], seniority: Mapping[str, int] | None, cache: ParseCache | None,
    refused: tuple[Problem, ...],
) -> tuple[Inventory, list[Problem]]:
    run = _Run(cache=cache if cache is not None else {})
    run.loose.extend(refused)
    run.refused = frozenset(p.file for p in refused)
    for path, name in server_files(dict.fromkeys(run.refused, b"")).items():
        if path not in files:
            run.rejected.add(name)
    subnets: dict[str, Subnet] = {}
    profiles: dict[str, Profile] = {}
    arts: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
    sdoc = _load_doc(run, files, SUBNETS_FILE, "subnets")
    if sdoc is not None:
        subnets = _built(run, sdoc, (), _subnets, sdoc).model
    pdoc = _load_doc(run, files, PROFILES_FILE, "profiles")
    if pdoc is not None:
        profiles, arts = _built(run, pdoc, (), _profiles, pdoc).model
    policy = Policy()
    if POLICY_FILE in files:
        policy_doc = _load_doc(run, files, POLICY_FILE, "policy")
        if policy_doc is not None:
            policy = Policy.from_data(policy_doc.data)
    declared: dict[str, frozenset[str] | None] = {
        "subnets": _declared(run, SUBNETS_FILE, "subnets"),
        "profiles": _declared(run, PROFILES_FILE, "profiles"),
    }

    # A server is built from its file and these two; their bytes key the memo of _server.
    context = (files.get(SUBNETS_FILE), files.get(PROFILES_FILE))
    memo: dict[str, Built] = {}
    by_path = server_files(files)
    by_name: dict[str, list[str]] = {}
    for path, name in by_path.items():
        by_name.setdefault(name.lower(), []).append(path)
    servers: dict[str, Server] = {}
    for path in sorted(by_path):
        name = by_path[path]
        doc = _load_doc(run, files, path, "server")
        if not _NAME.match(name):
            run.loose.append(Problem(path, None, "", f"file name {name!r} is not a valid host "
                                     "name (lower-case letters, digits and '-')"))
            run.rejected.add(name)
            continue
        if len(by_name[name.lower()]) > 1:
            others = ", ".join(p for p in by_name[name.lower()] if p != path)
            run.loose.append(Problem(path, None, "", f"duplicate server name {name!r} "
                                     f"(also {others})"))
            run.rejected.add(name)
            continue
        if doc is None:
            run.rejected.add(name)
            continue
        built = _built(run, doc, context, _server, doc, name, subnets, profiles, arts, declared)
        if built.model is None:
            run.rejected.add(name)
        else:
            servers[name] = built.model
            memo[name] = built

    rank = seniority or {}
    order = sorted(servers, key=lambda n: (rank.get(n, 1 << 62), n))
    _cross_checks(run, servers, order)
    for name in run.rejected:
        servers.pop(name, None)
    order = [n for n in order if n in servers]

    requests = []
    for name in order:
        s = servers[name]
        for iface in s.interfaces:
            if iface.mode == "dhcp" or iface.subnet is None:
                continue
            requests.append(ipam.Request(name, iface.name, iface.subnet, iface.address,
                                         s.bmc.host, s.bmc.system_id or ""))
    plans = {
        n: ipam.SubnetPlan(s.network, s.gateway,
                           tuple((r.start, r.end, r.reason) for r in s.reserved))
        for n, s in subnets.items()
    }
    allocation = ipam.allocate(plans, requests)
    for refusal in allocation.refusals:
        server = servers.pop(refusal.host)
        index = next(i for i, f in enumerate(server.interfaces) if f.name == refusal.interface)
        doc = run.docs[server.file]
        doc.problems.append(doc.problem(("interfaces", index, "address"), refusal.message))
        run.rejected.add(refusal.host)

    templates = {
        p[len(TEMPLATES_DIR):]: files[p].decode("utf-8", "replace")
        for p in files
        if p.startswith(TEMPLATES_DIR) and p.endswith(".j2")
    }
    for name, text in sorted(templates.items()):
        for line, label in schema.template_secrets(text):
            run.loose.append(Problem(TEMPLATES_DIR + name, line, "",
                                     f"looks like {label}: {schema.SECRET_HINT}"))
    inspections, warnings = _inspections(run, files, set(by_path.values()))
    problems = run.loose + [p for d in run.docs.values() for p in d.problems]
    inventory = Inventory(
        subnets=MappingProxyType(subnets),
        profiles=MappingProxyType(profiles),
        base_artifacts=MappingProxyType(arts),
        servers=MappingProxyType(servers),
        rejected=frozenset(run.rejected),
        policy=policy,
        templates=MappingProxyType(templates),
        allocation=allocation,
        seniority=tuple(n for n in order if n in servers),
        built=MappingProxyType({n: memo[n] for n in servers}),
        inspections=MappingProxyType(inspections),
        warnings=tuple(sort_problems(warnings)),
    )
    forget_lines()
    return inventory, sort_problems(problems)


def _inspections(run: _Run, files: Mapping[str, bytes], servers: set[str],
                 ) -> tuple[dict[str, Mapping[str, Any]], list[Problem]]:
    """The inspection reports, read after every server file (so the shared budgets refuse a
    report before a server). A report that fails its checks is a problem and is left out --
    the reconciler writes it again; one whose server has no file (any file, valid or not) is a
    warning: kept, describing nothing."""
    reports: dict[str, Mapping[str, Any]] = {}
    warnings: list[Problem] = []
    for path in sorted(p for p in files if p.startswith(INSPECTION_DIR)):
        name = inspection.report_name(path)
        if name is None:
            continue
        doc = _load_doc(run, files, path, "inspection")
        if doc is None or not inspection.check(doc, name):
            continue
        if name not in servers:
            warnings.append(doc.problem(("server",), f"no server {name!r} in {SERVERS_DIR}: "
                                        "this report describes nothing"))
        reports[name] = doc.data
    return reports, warnings


def _declared(run: _Run, file: str, key: str) -> frozenset[str] | None:
    doc = run.docs.get(file)
    if doc is None or not isinstance(doc.data, dict) or not isinstance(doc.data.get(key), dict):
        return None
    return frozenset(str(k) for k in doc.data[key])


def _cross_checks(run: _Run, servers: Mapping[str, Server], order: list[str]) -> None:
    """Duplicate MACs and BMC identities: the senior server keeps it, the junior is rejected."""
    macs: dict[str, str] = {}
    bmcs: dict[tuple[str, str], str] = {}
    for name in order:
        s = servers[name]
        doc = run.docs[s.file]
        for i, iface in enumerate(s.interfaces):
            holder = macs.setdefault(iface.mac, name)
            if holder != name:
                doc.problems.append(doc.problem(("interfaces", i, "mac"),
                                                f"MAC {iface.mac} is already used by {holder}"))
                run.rejected.add(name)
            elif [f.mac for f in s.interfaces].index(iface.mac) != i:
                doc.problems.append(doc.problem(("interfaces", i, "mac"),
                                                f"MAC {iface.mac} is listed twice"))
                run.rejected.add(name)
        if s.bmc.system_id:
            key = (s.bmc.host.lower(), s.bmc.system_id)
            holder = bmcs.setdefault(key, name)
            if holder != name:
                doc.problems.append(doc.problem(
                    ("bmc", "system_id"),
                    f"BMC {s.bmc.host} system {s.bmc.system_id} is already {holder}"))
                run.rejected.add(name)


# The directories of an inventory (every file below them counts towards limits.MAX_ENTRIES).
_DIRS = (SERVERS_DIR, TEMPLATES_DIR, INSPECTION_DIR)
# Opening a path component: never through a symlink (ELOOP instead), never blocking on a FIFO.
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_SYMLINK = "symlinks are not followed"


# A path the report could not print as it is, or that could forge a line of it: control
# characters (a newline), bytes that are not UTF-8 (surrogate escapes), their escapes instead.
_ODD_NAME = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def odd_name(rel: str) -> Problem | None:
    """A problem for a path with a name the report cannot print, else None."""
    if not _ODD_NAME.search(rel):
        return None
    # a surrogate escape \udcXX stands for the byte XX
    shown = _ODD_NAME.sub(lambda m: f"\\x{ord(m.group()) & 0xff:02x}", rel)
    return Problem(shown, None, "", "the name has control characters or is not UTF-8: not read")


def wanted(rel: str) -> bool:
    """Whether ``rel`` (repository-relative) is an inventory file: the top-level YAML files,
    servers/**/*.yaml|yml, templates/**/*.j2, inspection/*.yaml. Nothing else is ever read."""
    if rel in (SUBNETS_FILE, PROFILES_FILE, POLICY_FILE):
        return True
    if rel.startswith(SERVERS_DIR):
        return rel.endswith((".yaml", ".yml"))
    if rel.startswith(INSPECTION_DIR):
        return inspection.report_name(rel) is not None
    return rel.startswith(TEMPLATES_DIR) and rel.endswith(".j2")


@dataclass(slots=True)
class _TreeReader:
    """One reading of a working tree: regular files inside it only, within the limits."""

    files: dict[str, bytes] = field(default_factory=dict)
    refused: list[Problem] = field(default_factory=list)
    intake: limits.Intake = field(default_factory=limits.Intake)

    def refuse(self, rel: str, message: str) -> None:
        self.refused.append(Problem(rel, None, "", message))

    def open(self, dir_fd: int, name: str, rel: str, flags: int = 0) -> int | None:
        try:
            return os.open(name, _OPEN | flags, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_symlink(dir_fd, name):
                self.refuse(rel, _SYMLINK)  # ENOTDIR: asked for a directory (O_DIRECTORY)
            elif exc.errno != errno.ENOTDIR:  # servers is a file: there is no server
                self.refuse(rel, f"cannot be read: {exc.strerror}")
            return None

    def file(self, dir_fd: int, name: str, rel: str) -> None:
        fd = self.open(dir_fd, name, rel)
        if fd is None:
            return
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                if not stat.S_ISDIR(st.st_mode) or rel.startswith(_DIRS):
                    self.refuse(rel, "not a regular file")
                return
            refusal = self.intake.file(st.st_size)
            if refusal is not None:
                self.refuse(rel, refusal)
                return
            data = _read_at_most(fd, limits.MAX_FILE_BYTES + 1)
        except OSError as exc:
            self.refuse(rel, f"cannot be read: {exc.strerror}")
            return
        finally:
            os.close(fd)
        if len(data) > limits.MAX_FILE_BYTES:  # it grew after fstat
            self.refuse(rel, f"file is more than {limits.size_text(limits.MAX_FILE_BYTES)}")
            return
        self.files[rel] = data

    def directory(self, dir_fd: int, name: str, rel: str) -> None:
        if rel.count("/") >= limits.MAX_DIRECTORY_DEPTH:
            self.refuse(rel + "/", f"directories nested deeper than "
                        f"{limits.MAX_DIRECTORY_DEPTH} levels are not read")
            return
        fd = self.open(dir_fd, name, rel, os.O_DIRECTORY)
        if fd is None:
            return
        try:
            with os.scandir(fd) as it:
                # Never more entries than the intake has left: a directory of a million names
                # costs no more than the limit.
                entries = []
                for entry in it:
                    refusal = self.intake.entry()
                    if refusal is not None:
                        self.refuse(rel + "/", refusal)
                        break
                    try:
                        entries.append((entry.name, entry.is_symlink(),
                                        entry.is_dir(follow_symlinks=False)))
                    except OSError:
                        continue  # gone since it was listed
            if any(child == ".git" for child, _, _ in entries):
                # a checked-out submodule: a git revision's tree has it as a commit entry,
                # which is not read either
                self.refuse(rel, "submodules are not read")
                return
            for child, is_link, is_dir in sorted(entries):
                sub = f"{rel}/{child}"
                if self.intake.stopped:
                    return
                if (odd := odd_name(sub)) is not None:
                    self.refused.append(odd)
                elif is_dir:
                    self.directory(fd, child, sub)
                elif child.startswith("."):
                    continue  # not an inventory file (nor an editor's lock file link)
                elif is_link:
                    self.refuse(sub, _SYMLINK)
                elif wanted(sub):
                    self.file(fd, child, sub)
        finally:
            os.close(fd)


def _is_symlink(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks = []
    size = 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def read_worktree(root: Path) -> tuple[dict[str, bytes], list[Problem]]:
    """The inventory files of a working tree, and a problem for each file not read.

    Reads regular files inside ``root`` only (``root`` itself is the caller's choice). Every
    path component below it is opened relative to its directory with ``O_NOFOLLOW``, so a
    symlink anywhere -- ``servers/x.yaml`` to /etc/passwd, ``templates`` to another repository --
    is refused ("symlinks are not followed") and nothing can swap one in between the check and
    the read. Sizes, the total and the number of entries are checked before a byte is read
    (:mod:`reconciler.model.limits`); files are read in path order, so the same tree gives the
    same result.
    """
    reader = _TreeReader()
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in (SUBNETS_FILE, PROFILES_FILE, POLICY_FILE):
            reader.file(root_fd, name, name)
        for sub in _DIRS:  # inspection/ last: the budgets refuse a report before a server
            if not reader.intake.stopped:
                reader.directory(root_fd, sub.rstrip("/"), sub.rstrip("/"))
    finally:
        os.close(root_fd)
    return reader.files, reader.refused


def read_directory(root: Path) -> dict[str, bytes]:
    """The inventory files of a working tree (YAML at the top, servers/**, templates/**);
    files :func:`read_worktree` refuses are left out (it says why)."""
    return read_worktree(root)[0]


def load_inventory(
    root: Path, *, seniority: Mapping[str, int] | None = None
) -> tuple[Inventory, list[Problem]]:
    """Read and validate the inventory in directory ``root``."""
    files, refused = read_worktree(root)
    return parse_inventory(files, seniority=seniority, refused=refused)


__all__ = [
    "Bmc", "CloudInit", "Disk", "Image", "Interface", "Inventory", "Profile", "Reserved",
    "Server", "Subnet", "dotted", "load_inventory", "parse_inventory", "read_directory",
    "read_worktree",
]
