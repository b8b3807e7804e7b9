"""The mechanisms that make the 10,000-server pipeline fast give exactly the plain results.

- the parse/build memo shared between revisions (``parse_inventory(cache=)``) and the desired
  hosts reused from it;
- digests assembled from per-field JSON equal the canonical JSON of the whole record;
- the renderer's to_yaml with exact-type shortcuts writes what the ABC-checking one wrote;
- IPAM probing on integers allocates exactly as probing on IPv4Address objects did;
- the collector pause around bulk builds always restores the collector's state, and what the
  block built is promoted to the oldest generation, where cycles are still collected;
- the secret scan's text screen passes only files the full walk finds clean.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import random
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import date
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType
from typing import Any

import pytest

from reconciler.model import desired_hosts, parse_inventory, schema
from reconciler.model.bulk import paused_gc
from reconciler.model.desired import DesiredHost
from reconciler.model.impact import BUILD_FIELDS, PROVISION_FIELDS
from reconciler.model.ipam import (
    Allocation,
    Blocker,
    Collision,
    Refusal,
    Request,
    SubnetPlan,
    allocate,
    formula_offset,
)
from reconciler.model.yamlio import parse
from reconciler.plan.inventory_diff import diff_inventories, to_record
from reconciler.render.renderer import _PLAIN, _YAML11_WORDS, _to_yaml
from tests.fixtures.inventory import PROFILES, example_files, files, server
from tests.unit.test_inventory_validate import CORPUS


def _reference_digests(host: DesiredHost) -> tuple[str, str, str]:
    """The digests' definition: sha256 of json.dumps(sort_keys) of the record (and subsets)."""
    rec = host.to_record()
    del rec["digests"]

    def digest(value: Any) -> str:
        blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    return (digest(rec), digest({k: rec[k] for k in BUILD_FIELDS}),
            digest({k: rec[k] for k in PROVISION_FIELDS}))


def test_digests_equal_canonical_json_of_the_record() -> None:
    odd_user_data = {
        "write_files": [{"path": "/etc/motd", "content": "héllo \"quoted\"\n\tü"}],
        "zeta": 1, "alpha": {"nested": [1, 2.5, None, True], "b": "x"},
        "when": date(2024, 1, 2),  # YAML timestamps reach the digest through default=str
    }
    inventory, problems = parse_inventory(files({
        "n1": server(1),
        "n2": server(2, cloud_init={"ssh_keys": ["ssh-ed25519 AAAA k@x"],
                                    "user_data": odd_user_data}),
        "n3": server(3, protected=True, bmc={"address": "https://bmc3:8443",
                                             "system_id": "s3", "credentials": "c",
                                             "verify_tls": False}),
    }))
    assert problems == []
    hosts = list(desired_hosts(inventory).values()) + list(
        desired_hosts(parse_inventory(example_files())[0]).values())
    assert len(hosts) >= 4
    for host in hosts:
        d = host.digests
        assert (d.spec, d.build, d.provision) == _reference_digests(host), host.name


def _revisions() -> tuple[dict[str, bytes], dict[str, bytes]]:
    base = files({f"n{i}": server(i) for i in range(1, 8)})
    head = files({f"n{i}": server(i) for i in range(2, 10)})  # n1 removed, n8/n9 added
    head["servers/n3.yaml"] = files({"n3": server(3, state="inspected")})["servers/n3.yaml"]
    head["servers/n4.yaml"] = b"state: provisioned\nstate: off\n"  # newly invalid
    return base, head


@pytest.mark.parametrize("order", ["head first", "base first"])
def test_shared_cache_gives_the_same_inventories_problems_hosts_and_plan(order: str) -> None:
    base_files, head_files = _revisions()
    cold_base, cold_base_problems = parse_inventory(base_files)
    cold_head, cold_head_problems = parse_inventory(head_files)
    cache: dict[Any, Any] = {}
    if order == "head first":
        head, head_problems = parse_inventory(head_files, cache=cache)
        base, base_problems = parse_inventory(base_files, cache=cache)
    else:
        base, base_problems = parse_inventory(base_files, cache=cache)
        head, head_problems = parse_inventory(head_files, cache=cache)
    assert (base, base_problems) == (cold_base, cold_base_problems)
    assert (head, head_problems) == (cold_head, cold_head_problems)
    assert head_problems  # the duplicate key in n4
    assert desired_hosts(base) == desired_hosts(cold_base)
    assert desired_hosts(head) == desired_hosts(cold_head)
    warm = to_record(diff_inventories(base, head, problems=head_problems))
    cold = to_record(diff_inventories(cold_base, cold_head, problems=cold_head_problems))
    assert warm == cold


def test_unchanged_servers_are_built_once_and_changes_rebuild() -> None:
    base_files, head_files = _revisions()
    cache: dict[Any, Any] = {}
    head, _ = parse_inventory(head_files, cache=cache)
    base, _ = parse_inventory(base_files, cache=cache)
    head_hosts, base_hosts = desired_hosts(head), desired_hosts(base)
    assert base.servers["n5"] is head.servers["n5"]  # same file, same shared files
    assert base_hosts["n5"] is head_hosts["n5"]
    assert base_hosts["n3"] != head_hosts["n3"]  # the file changed
    # A change to profiles.yaml changes every server's context: nothing is reused.
    other = dict(base_files)
    other["profiles.yaml"] = PROFILES.replace("ttyS0,115200n8", "ttyS1").encode()
    moved, _ = parse_inventory(other, cache=cache)
    moved_hosts = desired_hosts(moved)
    assert moved.servers["n5"] is not base.servers["n5"]
    assert moved_hosts["n5"].cmdline == "console=ttyS1"
    assert moved_hosts["n5"].digests.build != base_hosts["n5"].digests.build
    assert moved_hosts["n5"].digests.provision == base_hosts["n5"].digests.provision


def test_different_addresses_give_different_hosts_from_the_same_server() -> None:
    """A junior server moves when a senior one is removed: same Server, new address."""
    srv = {"a": server(1), "b": server(2)}
    with_a = files(srv)
    cache: dict[Any, Any] = {}
    sen = {"a": 0, "b": 1}
    full, _ = parse_inventory(with_a, seniority=sen, cache=cache)
    # Force b to collide with a: same IPAM key (BMC host + system id) is a duplicate, so pin
    # a static address on a instead, on b's formula slot.
    b_addr = desired_hosts(full)["b"].address
    pinned = files({"a": server(1, interfaces=[{"mac": "52:54:00:18:00:01", "subnet": "lab",
                                               "address": str(b_addr)}]), "b": server(2)})
    moved, problems = parse_inventory(pinned, seniority=sen, cache=cache)
    assert problems == []
    assert moved.servers["b"] is full.servers["b"]
    hosts = desired_hosts(moved)
    assert hosts["b"].address != b_addr
    assert hosts["b"] == desired_hosts(parse_inventory(pinned, seniority=sen)[0])["b"]


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_corpus_problems_are_replayed_from_the_cache(case: str) -> None:
    contents, _expected = CORPUS[case]
    cold = parse_inventory(contents)
    cache: dict[Any, Any] = {}
    first = parse_inventory(contents, cache=cache)
    second = parse_inventory(contents, cache=cache)
    assert first == cold
    assert second == cold


# The renderer's to_yaml before its type shortcuts (isinstance against the ABCs throughout):
# the fast version must write exactly the same text.
def _ref_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _YAML11_WORDS:
        return text
    return json.dumps(text, ensure_ascii=False)


def _ref_emit(value: Any, indent: str, out: list[str]) -> None:
    if isinstance(value, Mapping):
        for key, sub in value.items():
            head = f"{indent}{_ref_scalar(key)}:"
            if isinstance(sub, Mapping | list | tuple) and sub:
                out.append(head + "\n")
                _ref_emit(sub, indent + "  ", out)
            else:
                out.append(f"{head} {_ref_empty_or_scalar(sub)}\n")
    else:
        for item in value:
            if isinstance(item, Mapping) and item:
                sub_out: list[str] = []
                _ref_emit(item, indent + "  ", sub_out)
                out.append(indent + "- " + sub_out[0][len(indent) + 2:])
                out.extend(sub_out[1:])
            elif isinstance(item, list | tuple) and item:
                out.append(f"{indent}-\n")
                _ref_emit(item, indent + "  ", out)
            else:
                out.append(f"{indent}- {_ref_empty_or_scalar(item)}\n")


def _ref_empty_or_scalar(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list | tuple):
        return "[]"
    return _ref_scalar(value)


def _ref_to_yaml(value: Any) -> str:
    if not isinstance(value, Mapping | list | tuple) or not value:
        return _ref_empty_or_scalar(value) + "\n"
    out: list[str] = []
    _ref_emit(value, "", out)
    return "".join(out)


class _Str(str):
    pass


def _random_value(rng: random.Random, depth: int) -> Any:
    leaves: list[Any] = [None, True, False, 0, -7, 3.5, float("inf"), "", "plain", "yes", "No",
                         "a: b", "#x", "- y", "multi\nline", "ünï", "12", "0x1f", "~", "null",
                         date(2024, 5, 6), _Str("sub"), b"raw"]
    if depth <= 0 or rng.random() < 0.35:
        return rng.choice(leaves)
    kind = rng.randrange(6)
    items = [_random_value(rng, depth - 1) for _ in range(rng.randrange(4))]
    keys = [rng.choice(["k", "runcmd", "true", "1", "a b", "x-y", "é"]) + str(i)
            for i in range(len(items))]
    if kind == 0:
        return dict(zip(keys, items, strict=True))
    if kind == 1:
        return MappingProxyType(dict(zip(keys, items, strict=True)))
    if kind == 2:
        return OrderedDict(zip(keys, items, strict=True))
    if kind == 3:
        return tuple(items)
    if kind == 4:
        return {rng.randrange(5): v for v in items}  # non-string keys
    return items


def test_to_yaml_writes_exactly_what_the_reference_writes() -> None:
    rng = random.Random(1234)
    for _ in range(3000):
        value = _random_value(rng, 4)
        assert _to_yaml(value) == _ref_to_yaml(value), value


def test_secret_scan_still_finds_each_kind_behind_its_prefilter() -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
    doc = server(1, cloud_init={"user_data": {
        "write_files": [{"path": "/root/.ssh/id", "content": key}],
        "mirror": "https://user:s3cret@mirror.example/debian",
        "api_token": "abc", "note": "mail admin@example.org", "empty_password": ""}})
    _, problems = parse_inventory(files({"n1": doc}))
    text = [f"{p.path}: {p.message.split(':')[0]}" for p in problems]
    assert sorted(text) == sorted([
        "cloud_init.user_data.write_files[0].content: looks like a private key",
        "cloud_init.user_data.mirror: looks like a URL with a password",
        "cloud_init.user_data.api_token: looks like a password",
    ])
    assert all("s3cret" not in str(p) and "b3Blbn" not in str(p) for p in problems)


# IPAM as it was written on IPv4Address objects; allocate() now probes on integers and must
# give exactly the same allocation, collisions (with their blockers) and refusals.
def _ref_fixed_reason(subnet: SubnetPlan, address: IPv4Address) -> str | None:
    if address == subnet.network.network_address:
        return "network address"
    if address == subnet.network.broadcast_address:
        return "broadcast address"
    if address == subnet.gateway:
        return "gateway"
    for start, end, reason in subnet.reserved:
        if start <= address <= end:
            return f"reserved: {reason}" if reason else "reserved"
    return None


def _ref_allocate(subnets: Mapping[str, SubnetPlan], requests: Iterable[Request]) -> Allocation:
    """Grant ``requests`` (already in seniority order). Pure and deterministic."""
    owner: dict[tuple[str, IPv4Address], str] = {}
    addresses: dict[tuple[str, str], IPv4Address] = {}
    collisions: list[Collision] = []
    refusals: list[Refusal] = []
    rejected: set[str] = set()
    for req in requests:
        if req.host in rejected:
            continue
        subnet = subnets[req.subnet]
        net = subnet.network
        if req.static is not None:
            holder = owner.get((req.subnet, req.static))
            if holder is not None:
                refusals.append(Refusal(req.host, req.interface,
                                        f"address {req.static} is already held by {holder}"))
                rejected.add(req.host)
                continue
            owner[(req.subnet, req.static)] = f"host {req.host}"
            addresses[(req.host, req.interface)] = req.static
            continue
        size = net.num_addresses
        if size < 4:
            refusals.append(Refusal(req.host, req.interface,
                                    f"subnet {req.subnet} ({net}) is too small to allocate from"))
            rejected.add(req.host)
            continue
        start = formula_offset(req.bmc_host, req.bmc_resource_id, size)
        span = size - 3
        blocked: list[Blocker] = []
        got: IPv4Address | None = None
        for step in range(span):
            offset = (start - 2 + step) % span + 2
            candidate = net.network_address + offset
            reason = owner.get((req.subnet, candidate)) or _ref_fixed_reason(subnet, candidate)
            if reason is None:
                got = candidate
                break
            if len(blocked) < 8:  # enough to explain; a full reserved /16 would flood the plan
                blocked.append(Blocker(candidate, reason))
        if got is None:
            refusals.append(Refusal(req.host, req.interface,
                                    f"subnet {req.subnet} ({net}) has no free address left"))
            rejected.add(req.host)
            continue
        owner[(req.subnet, got)] = f"host {req.host}"
        addresses[(req.host, req.interface)] = got
        if blocked:
            collisions.append(Collision(req.host, req.interface, req.subnet,
                                        net.network_address + start, got, tuple(blocked)))
    # A rejected host must not hold addresses granted before its refusal.
    kept = {k: v for k, v in addresses.items() if k[0] not in rejected}
    return Allocation(kept, tuple(c for c in collisions if c.host not in rejected),
                      tuple(refusals))


@pytest.mark.parametrize("seed", range(6))
def test_integer_probing_allocates_exactly_as_before(seed: int) -> None:
    rng = random.Random(seed)
    plans = {
        "s28": SubnetPlan(IPv4Network("10.0.0.0/28"), IPv4Address("10.0.0.1"),
                          ((IPv4Address("10.0.0.6"), IPv4Address("10.0.0.8"), "dhcp"),)),
        "s30": SubnetPlan(IPv4Network("10.0.1.0/30"), IPv4Address("10.0.1.2")),
        "s24": SubnetPlan(IPv4Network("10.0.2.0/24"), IPv4Address("10.0.2.254"),
                          ((IPv4Address("10.0.2.0"), IPv4Address("10.0.2.200"), ""),)),
        "s31": SubnetPlan(IPv4Network("10.0.3.0/31"), IPv4Address("10.0.3.0")),
    }
    requests = []
    for i in range(rng.randint(5, 60)):
        name = rng.choice(list(plans))
        net = plans[name].network
        static = None
        if rng.random() < 0.3:
            static = net.network_address + rng.randrange(net.num_addresses)
        requests.append(Request(f"h{i % 40}", f"eth{i % 2}", name, static,
                                f"bmc{rng.randrange(9)}:443", str(rng.randrange(1000))))
    got, want = allocate(plans, requests), _ref_allocate(plans, requests)
    assert got == want
    assert got.collisions or got.refusals  # the cases worth comparing do occur


def test_paused_gc_restores_the_collector_state() -> None:
    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():  # nested: the inner one must not turn it back on
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), paused_gc():
        raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # a program that keeps it off keeps it off
    finally:
        gc.enable()
    inventory, _ = parse_inventory(example_files())
    desired_hosts(inventory)
    assert gc.isenabled()


def test_memo_is_keyed_by_every_input_even_in_a_hand_made_inventory() -> None:
    inventory, _ = parse_inventory(files({"n1": server(1)}))
    first = desired_hosts(inventory)["n1"]
    assert desired_hosts(inventory)["n1"] is first
    profile = inventory.profiles["default"]
    other = dataclasses.replace(inventory, profiles=MappingProxyType(
        {"default": dataclasses.replace(profile, cmdline="console=ttyS9")}))
    changed = desired_hosts(other)["n1"]
    assert changed.cmdline == "console=ttyS9"
    assert changed.digests.build != first.digests.build
    assert desired_hosts(inventory)["n1"].cmdline == first.cmdline


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_paused_gc_promotes_what_the_block_built_and_still_collects_its_cycles() -> None:
    gc.collect()
    with paused_gc():
        kept = [_Node() for _ in range(100)]
        a, b = _Node(), _Node()
        a.other, b.other = b, a  # a cycle, garbage once the names go
        gone = weakref.ref(a)
    oldest = {id(o) for o in gc.get_objects(generation=2)}
    assert all(id(n) in oldest for n in kept)  # no young-generation pass over them
    del a, b
    assert gone() is not None  # only the cyclic collector can free it...
    gc.collect()
    assert gone() is None  # ...and it does


_TRICKY = {
    "plain": "bmc:\n  credentials: dc-bmc\n  address: x\n",
    "no newline at the end": "bmc:\n  credentials: dc-bmc",
    "colon": "bmc:\n  credentials: u:p\n",
    "quoted": 'bmc:\n  credentials: "u:p"\n',
    "plain continued": "bmc:\n  credentials: abc\n    def:ghi\n",
    "continued after a blank line": "bmc:\n  credentials: abc\n\n    def:ghi\n",
    "continued after a blank line with spaces": "bmc:\n  credentials: abc\n   \n    d:g\n",
    "block scalar": "bmc:\n  credentials: |\n    u:p\n",
    "value on the next line": "bmc:\n  credentials:\n    u:p\n",
    "flow mapping": "bmc: {credentials: 'u:p'}\n",
    "list item": "- bmc:\n    credentials: u:p\n",
    "nested anywhere": "a:\n  b:\n    bmc:\n      credentials: u:p\n",
    "password key": "x:\n  password: hunter2\n",
    "escaped key": 'x:\n  "p\\x61ssword": hunter2\n',
    "escaped at sign": 'image:\n  url: "https://a:b\\x40h/x"\n',
    "url": "image:\n  url: https://a:b@h/x\n",
    "pem": "k: \"-----BEGIN OPENSSH PRIVATE KEY-----\\nAAA\"\n",
    "folded pem": "k: \"-----BEGIN\n  OPENSSH PRIVATE KEY-----\"\n",
    "upper-case key": "x:\n  API_KEY: abc\n",
    "ssh keys are not secret keys": "ssh_keys: [a]\n",
}


def _walk_finds(text: str, monkeypatch: pytest.MonkeyPatch) -> set[tuple[str | int, ...]]:
    with monkeypatch.context() as m:
        m.setattr(schema, "_may_hold_secrets", lambda _text: True)
        doc = parse("f.yaml", text.encode())
        return schema.find_secrets(doc) if doc.data is not None else set()


def test_secret_screen_passes_only_files_the_full_walk_finds_clean(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = dict(_TRICKY)
    for path, data in example_files().items():
        texts[path] = data.decode()
    for case, (case_files, _) in CORPUS.items():
        for path, data in case_files.items():
            texts[f"{case}: {path}"] = data.decode()
    found_any = 0
    for label, text in texts.items():
        found = _walk_finds(text, monkeypatch)
        found_any += bool(found)
        assert not found or schema._may_hold_secrets(text), label
    assert found_any >= 15  # the corpus does exercise the walk
    # and the screen is worth having: an ordinary server file passes it
    assert not schema._may_hold_secrets(example_files()["servers/lab-host-01.yaml"].decode())
    assert not schema._may_hold_secrets(_TRICKY["plain"])
    assert not schema._may_hold_secrets(_TRICKY["continued after a blank line"].replace(
        "    def:ghi", "address: x"))
