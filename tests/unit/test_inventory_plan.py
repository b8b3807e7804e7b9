"""Plan: pure diff of two inventories (no git), consequences and the markdown report."""

from __future__ import annotations

from typing import Any

from reconciler.model import parse_inventory
from reconciler.plan.inventory_diff import diff_inventories, to_record
from reconciler.plan.markdown import MAX_ROWS, render_markdown
from tests.fixtures.inventory import files, server


def _plan(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    base, _ = parse_inventory(files(old))
    head, problems = parse_inventory(files(new))
    return to_record(diff_inventories(base, head, problems=problems))


def test_state_transitions_use_the_table() -> None:
    old = {f"n{i}": server(i) for i in range(1, 5)}
    new = {
        "n1": server(1, state="off"),
        "n2": server(2, state="unmanaged"),
        "n3": server(3, state="inspected"),
        "n4": server(4),
    }
    plan = _plan(old, new)
    actions = {h["name"]: h["actions"] for h in plan["hosts"]}
    assert actions == {"n1": ["power-off"], "n2": ["unmanaged: never touched"],
                       "n3": ["inspect (reboots into the ephemeral OS, then off; the disk is "
                              "not touched)"]}
    workflows = {h["name"]: (h["workflow"], h["hold"]) for h in plan["hosts"]}
    assert workflows == {"n1": ("power-off", None), "n2": (None, None),
                         "n3": ("inspect", None)}
    assert plan["summary"]["destructive"] == 0 and plan["summary"]["unchanged"] == 1


def test_invalid_in_head_is_left_alone() -> None:
    plan = _plan({"n1": server(1)}, {"n1": server(1, disk={"serial": "bad serial!"})})
    (host,) = plan["hosts"]
    assert host["kind"] == "invalid" and not host["destructive"]
    assert plan["problems"][0]["text"].startswith("servers/n1.yaml:")


def test_address_change_of_a_provisioned_host_is_destructive() -> None:
    iface = [{"mac": "52:54:00:18:00:01", "subnet": "lab", "address": "198.18.0.40"}]
    plan = _plan({"n1": server(1)}, {"n1": server(1, interfaces=iface)})
    (host,) = plan["hosts"]
    assert host["destructive"]
    assert host["moved"]["eth0"]["new"] == "198.18.0.40"
    assert "interfaces[0].address" in {c["path"] for c in host["changes"]}


def test_markdown_is_capped_for_pr_comments() -> None:
    count = MAX_ROWS + 30
    new = {f"h{i:03d}": server(i % 250 + 1, interfaces=[
        {"mac": f"52:54:00:19:{i >> 8:02x}:{i & 255:02x}", "subnet": "lab",
         "address": "dhcp"}], state="inspected") for i in range(count)}
    # Same BMC identities repeat past 250; keep ids unique to stay valid.
    for i, doc in enumerate(new.values()):
        doc["bmc"] = {**doc["bmc"], "system_id": f"sys-{i}"}
    base, _ = parse_inventory(files({}))
    head, problems = parse_inventory(files(new))
    assert problems == []
    md = render_markdown(diff_inventories(base, head, problems=problems))
    assert f"| … | {count - MAX_ROWS} more hosts (see --format json) | | |" in md
    assert len(md) < 65_536
    assert md.count("| `h") == MAX_ROWS
