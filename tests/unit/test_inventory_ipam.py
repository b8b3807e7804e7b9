"""IPAM: the seed's formula, recomputed here with hashlib, and the seniority collision rule."""

from __future__ import annotations

import hashlib
import random
from ipaddress import IPv4Address, IPv4Network

import pytest

from reconciler.model import desired_hosts, parse_inventory
from reconciler.model.ipam import Request, SubnetPlan, allocate, formula_address, formula_offset
from tests.fixtures.inventory import files, server, system_id


def seed_formula(bmc_host: str, resource_id: str, cidr: str) -> IPv4Address:
    """The seed's Ansible expression, transcribed independently of the product code."""
    net = IPv4Network(cidr)
    h = hashlib.sha256((bmc_host + "/" + resource_id).encode()).hexdigest()
    offset = int(h[:8], 16) % (net.num_addresses - 3) + 2
    return net.network_address + offset


@pytest.mark.parametrize("cidr", ["10.0.0.0/8", "172.16.0.0/16", "198.18.0.0/24",
                                  "192.0.2.0/27", "192.0.2.64/29", "192.0.2.4/30"])
@pytest.mark.parametrize("n", range(1, 9))
def test_formula_vectors(cidr: str, n: int) -> None:
    net = IPv4Network(cidr)
    got = formula_address(net, "198.18.0.1:8000", system_id(n))
    assert got == seed_formula("198.18.0.1:8000", system_id(n), cidr)
    # Never the network address, .1 (conventional gateway) or the broadcast address.
    assert net.network_address + 2 <= got <= net.broadcast_address - 1


def test_formula_known_values() -> None:
    # Written out once so a change to the formula (or its key) cannot go unnoticed.
    assert formula_offset("198.18.0.1:8000", system_id(1), 256) == 4
    assert formula_offset("198.18.0.1:8000", system_id(2), 256) == 223
    assert formula_offset("198.18.0.1:8000", system_id(3), 256) == 206
    assert formula_offset("bmc.example", "System.Embedded.1", 4) == 2  # /30: only offset 2


def test_smallest_usable_and_too_small() -> None:
    assert formula_offset("x", "y", 4) == 2
    for size in (1, 2):
        with pytest.raises(ValueError, match="too small"):
            formula_offset("x", "y", size)
    plans = {"p2p": SubnetPlan(IPv4Network("192.0.2.0/31"), IPv4Address("192.0.2.0"))}
    alloc = allocate(plans, [Request("a", "eth0", "p2p", None, "h", "1")])
    assert alloc.refusals[0].message == "subnet p2p (192.0.2.0/31) is too small to allocate from"


def test_slash30_second_host_has_nowhere_to_go() -> None:
    plans = {"tiny": SubnetPlan(IPv4Network("192.0.2.4/30"), IPv4Address("192.0.2.5"))}
    alloc = allocate(plans, [Request("a", "eth0", "tiny", None, "h", "1"),
                             Request("b", "eth0", "tiny", None, "h", "2")])
    assert alloc.addresses == {("a", "eth0"): IPv4Address("192.0.2.6")}
    assert [r.message for r in alloc.refusals] == [
        "subnet tiny (192.0.2.4/30) has no free address left"]


def _key_for_offset(offset: int, size: int, avoid: frozenset[str] | set[str] = frozenset()) -> str:
    """A system id whose formula offset is ``offset`` (searched, like a real collision)."""
    for i in range(1_000_000):
        sid = f"sys-{i}"
        if sid not in avoid and formula_offset("bmc", sid, size) == offset:
            return sid
    raise AssertionError("no key found")


def test_collision_probes_upward_and_skips_reserved_and_gateway() -> None:
    net = IPv4Network("198.18.0.0/24")
    plans = {"lab": SubnetPlan(net, IPv4Address("198.18.0.1"),
                               ((IPv4Address("198.18.0.100"), IPv4Address("198.18.0.199"),
                                 "dnsmasq DHCP range"),))}
    a = _key_for_offset(99, 256)
    b = _key_for_offset(99, 256, {a})
    c = _key_for_offset(150, 256)  # inside the DHCP range
    alloc = allocate(plans, [Request("a", "eth0", "lab", None, "bmc", a),
                             Request("b", "eth0", "lab", None, "bmc", b),
                             Request("c", "eth0", "lab", None, "bmc", c)])
    assert alloc.addresses[("a", "eth0")] == IPv4Address("198.18.0.99")
    # .99 is a's; .100-.199 are reserved: b goes to .200, c (formula .150) to .201.
    assert alloc.addresses[("b", "eth0")] == IPv4Address("198.18.0.200")
    assert alloc.addresses[("c", "eth0")] == IPv4Address("198.18.0.201")
    b_col = next(col for col in alloc.collisions if col.host == "b")
    assert b_col.wanted == IPv4Address("198.18.0.99")
    assert b_col.blocked_by[0].reason == "host a"
    assert b_col.blocked_by[1].reason == "reserved: dnsmasq DHCP range"
    assert "placed at 198.18.0.200" in b_col.describe()


def test_probe_wraps_from_top_to_offset_2() -> None:
    net = IPv4Network("192.0.2.0/29")  # offsets 2..6
    plans = {"s": SubnetPlan(net, IPv4Address("192.0.2.1"))}
    a = _key_for_offset(6, 8)
    b = _key_for_offset(6, 8, {a})
    alloc = allocate(plans, [Request("a", "e", "s", None, "bmc", a),
                             Request("b", "e", "s", None, "bmc", b)])
    assert alloc.addresses[("b", "e")] == IPv4Address("192.0.2.2")


def test_static_held_by_senior_is_refused_not_displaced() -> None:
    net = IPv4Network("198.18.0.0/24")
    plans = {"lab": SubnetPlan(net, IPv4Address("198.18.0.1"))}
    a = _key_for_offset(50, 256)
    alloc = allocate(plans, [Request("a", "eth0", "lab", None, "bmc", a),
                             Request("b", "eth0", "lab", IPv4Address("198.18.0.50"))])
    assert alloc.addresses == {("a", "eth0"): IPv4Address("198.18.0.50")}
    assert alloc.refusals[0].message == "address 198.18.0.50 is already held by host a"


def test_static_senior_wins_over_junior_auto() -> None:
    net = IPv4Network("198.18.0.0/24")
    plans = {"lab": SubnetPlan(net, IPv4Address("198.18.0.1"))}
    a = _key_for_offset(50, 256)
    alloc = allocate(plans, [Request("s", "eth0", "lab", IPv4Address("198.18.0.50")),
                             Request("a", "eth0", "lab", None, "bmc", a)])
    assert alloc.addresses[("s", "eth0")] == IPv4Address("198.18.0.50")
    assert alloc.addresses[("a", "eth0")] == IPv4Address("198.18.0.51")


@pytest.mark.parametrize("seed", range(5))
def test_adding_a_server_never_moves_one_already_placed(seed: int) -> None:
    """Grow a crowded /26 (with a reserved range and static addresses) one server at a time,
    like commits do; after each addition every earlier server keeps its address."""
    rng = random.Random(seed)
    net = IPv4Network("10.9.8.0/26")
    plans = {"s": SubnetPlan(net, IPv4Address("10.9.8.1"),
                             ((IPv4Address("10.9.8.20"), IPv4Address("10.9.8.29"), "dhcp"),))}
    requests: list[Request] = []
    placed: dict[tuple[str, str], IPv4Address] = {}
    statics: set[IPv4Address] = set()
    for i in range(45):  # 61 offsets minus 10 reserved: nearly full
        if rng.random() < 0.2:
            address = net.network_address + rng.randrange(30, 62)
            req = Request(f"h{i}", "eth0", "s", address)
            statics.add(address)
        else:
            req = Request(f"h{i}", "eth0", "s", None, "bmc", f"sys-{rng.randrange(10**9)}")
        alloc = allocate(plans, [*requests, req])
        for key, address in placed.items():
            assert alloc.addresses[key] == address, f"{key} moved after adding {req.host}"
        if not alloc.refusals or alloc.refusals[-1].host != req.host:
            requests.append(req)
            placed = dict(alloc.addresses)
    assert len(placed) > 30
    assert len(set(placed.values())) == len(placed)
    assert all(not IPv4Address("10.9.8.20") <= a <= IPv4Address("10.9.8.29")
               for a in placed.values())


def test_inventory_seniority_orders_claims() -> None:
    """Same inventory, two histories: whoever was added first keeps the formula slot."""
    size = 256
    first = system_id(1)
    wanted = formula_offset("198.18.0.1:8000", first, size)
    rival = next(f"rival-{i}" for i in range(10**6)
                 if formula_offset("198.18.0.1:8000", f"rival-{i}", size) == wanted)
    docs = {
        "aaa": server(1),
        "zzz": server(2, bmc={"address": "http://198.18.0.1:8000", "system_id": rival,
                              "credentials": "lab-bmc"}),
    }
    inv, problems = parse_inventory(files(docs), seniority={"zzz": 1, "aaa": 2})
    assert problems == []
    hosts = desired_hosts(inv)
    assert str(hosts["zzz"].address) == f"198.18.0.{wanted}"
    assert str(hosts["aaa"].address) == f"198.18.0.{wanted + 1}"
    inv2, _ = parse_inventory(files(docs), seniority=None)  # no history: by name
    assert str(desired_hosts(inv2)["aaa"].address) == f"198.18.0.{wanted}"
    assert [c.host for c in inv.allocation.collisions] == ["aaa"]
