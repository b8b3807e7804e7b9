"""Deterministic IPAM, exactly the seed's formula, plus a collision rule that never moves a
server already placed when another is added.

Formula (seed, "Deterministic IPAM offset calculation")::

    offset  = int(sha256(f"{bmc_host}/{bmc_resource_id}").hexdigest()[:8], 16) % (size - 3) + 2
    address = network_address + offset

``bmc_host`` is the BMC's ``host[:port]`` (what the seed puts between ``https://`` and
``/redfish``), ``bmc_resource_id`` the Redfish system id, ``size`` the number of addresses in
the subnet. Offsets therefore range over ``2 .. size-2``: never the network address (0), the
conventional gateway (1) or the broadcast address (size-1).

Collision rule. Servers claim addresses one at a time in *seniority* order: the order in which
their files were added to the inventory (from git history, see ``adapters/git.py``; servers
not yet committed come last), ties broken by name. A static address claims exactly itself; an
``auto`` interface claims the formula's slot, or if that slot is taken, reserved, or is the
network/broadcast/gateway address, the next offset upward (wrapping from size-2 back to 2).

Guarantee: adding a server never moves one already placed. A new server is the most junior,
so every senior server's claims are decided before the new one is looked at, by the same
inputs as before. A new *static* address that is already held by a senior server is a
validation error on the new server (the senior keeps it), never a displacement. Removing a
server frees its address, and a junior server that had probed past it moves back to its own
slot; ``reconciler plan`` shows that as a moved address (pin the junior's address first if it
must not move).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

SMALLEST_PREFIX_FOR_AUTO = 30  # size 4: size - 3 == 1 usable offset (2)


def formula_offset(bmc_host: str, bmc_resource_id: str, size: int) -> int:
    """The seed's offset; ``size`` is the subnet's address count (must be >= 4)."""
    if size < 4:
        raise ValueError(f"subnet of {size} addresses is too small to allocate from")
    digest = hashlib.sha256(f"{bmc_host}/{bmc_resource_id}".encode()).hexdigest()
    return int(digest[:8], 16) % (size - 3) + 2


def formula_address(network: IPv4Network, bmc_host: str, bmc_resource_id: str) -> IPv4Address:
    offset = formula_offset(bmc_host, bmc_resource_id, network.num_addresses)
    return network.network_address + offset


@dataclass(frozen=True, slots=True)
class Request:
    """One interface's claim, in seniority order."""

    host: str
    interface: str
    subnet: str
    static: IPv4Address | None = None  # None: auto
    bmc_host: str = ""
    bmc_resource_id: str = ""


@dataclass(frozen=True, slots=True)
class Blocker:
    address: IPv4Address
    reason: str  # "host lab-host-01", "reserved: dnsmasq DHCP range", "gateway"


@dataclass(frozen=True, slots=True)
class Collision:
    """An auto interface whose formula slot was unavailable, and where it went instead."""

    host: str
    interface: str
    subnet: str
    wanted: IPv4Address
    got: IPv4Address
    blocked_by: tuple[Blocker, ...]

    def describe(self) -> str:
        why = ", ".join(f"{b.address} ({b.reason})" for b in self.blocked_by)
        return f"{self.host} {self.interface}: formula gives {self.wanted}, taken by {why}; " \
            f"placed at {self.got} (next free upward)"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A claim that could not be granted; the server is rejected, nobody else moves."""

    host: str
    interface: str
    message: str


@dataclass(frozen=True, slots=True)
class SubnetPlan:
    network: IPv4Network
    gateway: IPv4Address
    reserved: tuple[tuple[IPv4Address, IPv4Address, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Allocation:
    addresses: Mapping[tuple[str, str], IPv4Address]  # (host, interface) -> address
    collisions: tuple[Collision, ...]
    refusals: tuple[Refusal, ...]


def _fixed_reason(subnet: SubnetPlan, address: IPv4Address) -> str | None:
    """Why ``address`` can never be handed out in ``subnet`` (None: it can)."""
    return _Span.of(subnet).fixed_reason(int(address))


@dataclass(frozen=True, slots=True)
class _Span:
    """A subnet as integers, so probing compares ints rather than IPv4Address objects."""

    network: int
    broadcast: int
    gateway: int
    reserved: tuple[tuple[int, int, str], ...]

    @classmethod
    def of(cls, subnet: SubnetPlan) -> _Span:
        return cls(int(subnet.network.network_address), int(subnet.network.broadcast_address),
                   int(subnet.gateway),
                   tuple((int(a), int(b), reason) for a, b, reason in subnet.reserved))

    def fixed_reason(self, address: int) -> str | None:
        """Why ``address`` can never be handed out (None: it can)."""
        if address == self.network:
            return "network address"
        if address == self.broadcast:
            return "broadcast address"
        if address == self.gateway:
            return "gateway"
        for start, end, reason in self.reserved:
            if start <= address <= end:
                return f"reserved: {reason}" if reason else "reserved"
        return None


def allocate(subnets: Mapping[str, SubnetPlan], requests: Iterable[Request]) -> Allocation:
    """Grant ``requests`` (already in seniority order). Pure and deterministic."""
    owner: dict[tuple[str, int], str] = {}
    addresses: dict[tuple[str, str], IPv4Address] = {}
    collisions: list[Collision] = []
    refusals: list[Refusal] = []
    rejected: set[str] = set()
    spans = {name: _Span.of(plan) for name, plan in subnets.items()}
    for req in requests:
        if req.host in rejected:
            continue
        subnet = subnets[req.subnet]
        net = subnet.network
        if req.static is not None:
            holder = owner.get((req.subnet, int(req.static)))
            if holder is not None:
                refusals.append(Refusal(req.host, req.interface,
                                        f"address {req.static} is already held by {holder}"))
                rejected.add(req.host)
                continue
            owner[(req.subnet, int(req.static))] = f"host {req.host}"
            addresses[(req.host, req.interface)] = req.static
            continue
        size = net.num_addresses
        if size < 4:
            refusals.append(Refusal(req.host, req.interface,
                                    f"subnet {req.subnet} ({net}) is too small to allocate from"))
            rejected.add(req.host)
            continue
        span = spans[req.subnet]
        start = formula_offset(req.bmc_host, req.bmc_resource_id, size)
        usable = size - 3
        blocked: list[Blocker] = []
        got: int | None = None
        for step in range(usable):
            candidate = span.network + (start - 2 + step) % usable + 2
            reason = owner.get((req.subnet, candidate)) or span.fixed_reason(candidate)
            if reason is None:
                got = candidate
                break
            if len(blocked) < 8:  # enough to explain; a full reserved /16 would flood the plan
                blocked.append(Blocker(IPv4Address(candidate), reason))
        if got is None:
            refusals.append(Refusal(req.host, req.interface,
                                    f"subnet {req.subnet} ({net}) has no free address left"))
            rejected.add(req.host)
            continue
        owner[(req.subnet, got)] = f"host {req.host}"
        granted = IPv4Address(got)
        addresses[(req.host, req.interface)] = granted
        if blocked:
            collisions.append(Collision(req.host, req.interface, req.subnet,
                                        IPv4Address(span.network + start), granted,
                                        tuple(blocked)))
    # A rejected host must not hold addresses granted before its refusal.
    kept = {k: v for k, v in addresses.items() if k[0] not in rejected}
    return Allocation(kept, tuple(c for c in collisions if c.host not in rejected),
                      tuple(refusals))
