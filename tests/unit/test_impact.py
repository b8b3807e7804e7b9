"""One field -> effect table: the digests, the pull-request plan and the loop's decision agree.

Walks every leaf field of the server schema (its ``examples`` give a new value), changes it on
a provisioned, an off and an inspected server, and checks that the build digest changes exactly
when a changed field has the boot-image effect, the provision digest exactly when one has the
disk effect, the inspect digest only when one has the inspect effect (and always, but for the
BMC's connection settings), and that the plan wipes exactly when the disk effect meets a
provisioned server.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from reconciler import paths
from reconciler.model import parse_inventory
from reconciler.model.desired import DesiredHost, desired_hosts
from reconciler.model.impact import (
    BUILD_FIELDS,
    FIELD_EFFECTS,
    INSPECT_FIELDS,
    PROVISION_FIELDS,
    Effect,
)
from reconciler.plan.decide import Kind
from reconciler.plan.inventory_diff import diff_inventories
from tests.fixtures.inventory import files, server

EXTRA_PROFILES = """\
base_artifacts:
  amd64:
    kernels: [vmlinuz-amd64, vmlinuz]
    initramfs: [initramfs-amd64.img, initrd.img]
  arm64:
    kernels: [vmlinuz-amd64, vmlinuz-arm64]
    initramfs: [initramfs-amd64.img, initramfs-arm64.img]
profiles:
  default:
    architecture: amd64
    kernel: vmlinuz-amd64
    initramfs: initramfs-amd64.img
    cmdline: console=ttyS0,115200n8
    boot_method: cd
    image:
      url: http://198.18.0.1:8080/images/target.qcow2
      sha256: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
  lab:
    architecture: amd64
    kernel: vmlinuz
    initramfs: initrd.img
    cmdline: console=ttyS0
    boot_method: uefi-http
    image:
      url: http://198.18.0.1:8080/images/other.qcow2
      sha256: "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
"""


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(
        (paths.schemas_dir() / "inventory" / "server.schema.json").read_text())
    return schema


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return {**root["$defs"][ref.removeprefix("#/$defs/")],
                **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _leaves(node: dict[str, Any], root: dict[str, Any],
            path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """(path, value) for every scalar field of the schema: its examples and enum values."""
    node = _resolve(node, root)
    if node.get("type") == "object" and "properties" in node:
        for key, sub in node["properties"].items():
            yield from _leaves(sub, root, (*path, key))
    elif node.get("type") == "array" and isinstance(node.get("items"), dict):
        yield from _leaves(node["items"], root, (*path, 0))
    else:
        for example in [*(node.get("examples") or ()), *(node.get("enum") or ())]:
            yield path, example


def _set(doc: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    cur: Any = doc
    for i, key in enumerate(path):
        last = i == len(path) - 1
        fresh: Any = value if last else ([] if isinstance(path[i + 1], int) else {})
        if isinstance(key, int):
            if len(cur) <= key:
                cur.append(fresh)
            elif last:
                cur[key] = value
        elif last or key not in cur:
            cur[key] = fresh
        cur = cur[key]


def _host(doc: dict[str, Any]) -> DesiredHost | None:
    inv, problems = parse_inventory(files({"n1": doc}, profiles=EXTRA_PROFILES))
    if problems:
        return None
    return desired_hosts(inv)["n1"]


BASES = {
    "provisioned": server(1, disk={"serial": "LABDISK0001"}),
    "off": server(1, state="off"),
    "inspected": server(1, state="inspected"),
}


def test_every_record_field_has_effects_and_the_digests_use_the_table() -> None:
    host = _host(BASES["provisioned"])
    assert host is not None
    record = host.to_record()
    assert set(FIELD_EFFECTS) == set(record) - {"digests"}
    assert all(FIELD_EFFECTS[k] for k in FIELD_EFFECTS)
    assert set(BUILD_FIELDS) == {k for k, v in FIELD_EFFECTS.items() if Effect.BOOT_IMAGE in v}
    assert set(PROVISION_FIELDS) == {k for k, v in FIELD_EFFECTS.items() if Effect.DISK in v}
    assert set(INSPECT_FIELDS) == {k for k, v in FIELD_EFFECTS.items() if Effect.INSPECT in v}
    assert record["digests"]["inspect"] == host.inspect_digest != ""


# BMC settings that say how to reach the BMC, not which machine it is: the inspect effect of
# ``bmc`` is its identity (address host, system id) alone.
BMC_CONNECTION = {("bmc", "credentials"), ("bmc", "verify_tls"), ("bmc", "ca_bundle"),
                  ("bmc", "boot_method")}


def test_every_top_level_schema_field_maps_to_a_record_field() -> None:
    # The schema's names differ from the record's in two places: cloud_init feeds ssh_keys and
    # user_data, profile feeds kernel/initramfs/cmdline/boot_method/image/architecture.
    feeds = {"cloud_init": {"ssh_keys", "user_data"}, "profile": {"kernel"}}
    for key in _schema()["properties"]:
        assert feeds.get(key, {key}) <= set(FIELD_EFFECTS), key


@pytest.mark.parametrize("state", sorted(BASES))
def test_each_schema_field_change_agrees_between_digests_and_plan(state: str) -> None:
    schema = _schema()
    base_doc = BASES[state]
    base = _host(base_doc)
    assert base is not None
    base_inv, _ = parse_inventory(files({"n1": base_doc}, profiles=EXTRA_PROFILES))
    tried: set[str] = set()
    for path, example in _leaves(schema, schema):
        if path == ("state",):
            continue  # the state is the workflow itself, tested in test_decide
        doc = copy.deepcopy(base_doc)
        _set(doc, path, example)
        if path[0] == "disk":  # exactly one of serial / wwn
            doc["disk"] = {path[1]: example}
        new = _host(doc)
        if new is None or new.digests.spec == base.digests.spec:
            continue
        tried.add(str(path[0]))
        head_inv, problems = parse_inventory(files({"n1": doc}, profiles=EXTRA_PROFILES))
        plan = diff_inventories(base_inv, head_inv, problems=problems)
        (host_plan,) = plan.hosts
        effects = set().union(*(c.effects for c in host_plan.changes))
        where = f"{state}: {'.'.join(map(str, path))} = {example!r}"
        assert (new.digests.build != base.digests.build) == (Effect.BOOT_IMAGE in effects), where
        assert (new.digests.provision != base.digests.provision) == (Effect.DISK in effects), \
            where
        inspect_moved = new.inspect_digest != base.inspect_digest
        if inspect_moved:
            assert Effect.INSPECT in effects, where
        elif Effect.INSPECT in effects:
            assert path[:2] in BMC_CONNECTION, where
        if state == "inspected" and inspect_moved and not new.suspend:
            assert host_plan.action is not None and host_plan.action.kind == Kind.START, where
            assert not host_plan.destructive, where  # inspecting never wipes
        wipes = state == "provisioned" and Effect.DISK in effects and not new.protected
        assert host_plan.destructive == wipes, where
        assert host_plan.actions, where  # the plan always says what happens
        if not wipes and Effect.BOOT_IMAGE in effects and state != "inspected":
            assert any("boot image" in line for line in host_plan.actions), where
        if Effect.BOOT_IMAGE not in effects:
            assert not any("boot image" in line for line in host_plan.actions), where
    assert {"bmc", "interfaces", "disk", "cloud_init", "profile", "architecture",
            "protected", "suspend", "inspect_generation"} <= tried


def test_the_inspect_digest_follows_its_inputs_only() -> None:
    base_doc = BASES["inspected"]
    base = _host(base_doc)
    assert base is not None and base.inspect_generation == 0

    def digest(**changes: Any) -> str:
        doc = {k: v for k, v in {**base_doc, **changes}.items() if v is not None}
        host = _host(doc)
        assert host is not None, changes
        return host.inspect_digest

    same = [
        {"cloud_init": {"ssh_keys": ["ssh-ed25519 AAAAC3Nza op@example"]}},
        {"image": {"url": "http://198.18.0.1:8080/x.qcow2", "sha256": "c" * 64}},
        {"disk": {"serial": "OTHER"}},
        {"interfaces": None},
        {"bmc": {**base_doc["bmc"], "credentials": "other-ref", "verify_tls": False}},
        {"bmc": {**base_doc["bmc"], "address": "198.18.0.1:8000"}},  # same host, https
        {"protected": True},
    ]
    for changes in same:
        assert digest(**changes) == base.inspect_digest, changes
    moved = [
        {"inspect_generation": 1},
        {"bmc": {**base_doc["bmc"], "system_id": "other-system"}},
        {"bmc": {**base_doc["bmc"], "address": "http://198.18.0.1:8001"}},
        {"profile": "lab"},  # another kernel, initramfs and command line
    ]
    digests = {digest(**changes) for changes in moved}
    assert len(digests) == len(moved) and base.inspect_digest not in digests


def test_the_two_measured_disagreements_are_gone() -> None:
    # An SSH key on an inspected server changes the boot image, and the plan says so.
    base_doc = BASES["inspected"]
    head_doc = {**base_doc, "cloud_init": {"ssh_keys": ["ssh-ed25519 AAAAC3Nza op@example"]}}
    base_inv, _ = parse_inventory(files({"n1": base_doc}, profiles=EXTRA_PROFILES))
    head_inv, problems = parse_inventory(files({"n1": head_doc}, profiles=EXTRA_PROFILES))
    (hp,) = diff_inventories(base_inv, head_inv, problems=problems).hosts
    assert any("boot image" in line for line in hp.actions)
    # The boot method is not in the boot image: no rebuild claimed, build digest unchanged.
    doc = BASES["provisioned"]
    moved = {**doc, "bmc": {**doc["bmc"], "boot_method": "uefi-http"}}
    a, b = _host(doc), _host(moved)
    assert a is not None and b is not None and a.digests.build == b.digests.build
    base_inv, _ = parse_inventory(files({"n1": doc}, profiles=EXTRA_PROFILES))
    head_inv, problems = parse_inventory(files({"n1": moved}, profiles=EXTRA_PROFILES))
    (hp,) = diff_inventories(base_inv, head_inv, problems=problems).hosts
    assert not any("boot image" in line for line in hp.actions)
    assert any("boot method" in line for line in hp.actions)
