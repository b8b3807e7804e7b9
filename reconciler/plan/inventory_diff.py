"""What a change to the inventory would do: pure diff of two validated inventories.

``reconciler plan`` prints this for a pull request. Per host: added / removed / changed fields,
new or moved addresses, and the consequence, classified by a table of field -> impact:

- ``reprovision``: the field ends up on the target disk (image, disk, network identity,
  cloud-init seed). On a server that is (or becomes) ``provisioned`` that means a disk wipe:
  DESTRUCTIVE -- unless the server is ``protected``, then it is BLOCKED and nothing happens.
- ``rebuild``: only the ephemeral-OS image changes (kernel, initramfs, cmdline, boot method);
  a provisioned server is not touched until it is next provisioned or inspected.
- ``none``: bookkeeping (BMC connection details, the protected flag).

A removed server, or one whose file became invalid, is left exactly as it is.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.model.desired import DesiredHost, desired_hosts
from reconciler.model.inventory import Inventory
from reconciler.model.ipam import Collision
from reconciler.model.problems import Problem

# Top-level DesiredHost record field -> impact of changing it.
IMPACT: Mapping[str, str] = {
    "state": "state",
    "protected": "none",
    "file": "none",
    "bmc": "none",
    "boot_method": "rebuild",
    "kernel": "rebuild",
    "initramfs": "rebuild",
    "cmdline": "rebuild",
    "architecture": "reprovision",
    "interfaces": "reprovision",
    "disk": "reprovision",
    "image": "reprovision",
    "ssh_keys": "reprovision",
    "user_data": "reprovision",
    "templates_digest": "reprovision",
}

# What reaching a desired state does to a server that was not already there.
STATE_ACTION: Mapping[str, str] = {
    "provisioned": "provision (disk wipe)",
    "inspected": "inspect (boots the ephemeral OS, disk untouched)",
    "off": "power off",
    "unmanaged": "stop managing (left as is)",
}


@dataclass(frozen=True, slots=True)
class FieldChange:
    path: str
    old: Any
    new: Any
    impact: str


@dataclass(frozen=True, slots=True)
class HostPlan:
    name: str
    kind: str  # added | removed | changed | invalid
    changes: tuple[FieldChange, ...] = ()
    addresses_old: Mapping[str, str] = field(default_factory=dict)  # interface -> address
    addresses_new: Mapping[str, str] = field(default_factory=dict)
    actions: tuple[str, ...] = ()
    destructive: bool = False
    blocked: bool = False  # destructive but protected

    @property
    def moved(self) -> dict[str, tuple[str | None, str | None]]:
        out: dict[str, tuple[str | None, str | None]] = {}
        for iface in sorted(set(self.addresses_old) | set(self.addresses_new)):
            old, new = self.addresses_old.get(iface), self.addresses_new.get(iface)
            if old != new:
                out[iface] = (old, new)
        return out


@dataclass(frozen=True, slots=True)
class InventoryPlan:
    base: str
    head: str
    hosts: tuple[HostPlan, ...]
    collisions: tuple[Collision, ...]
    new_collisions: frozenset[tuple[str, str]]
    problems: tuple[Problem, ...]
    unchanged: int

    def summary(self) -> dict[str, int]:
        count = {k: sum(1 for h in self.hosts if h.kind == k)
                 for k in ("added", "removed", "changed", "invalid")}
        return {
            **count,
            "unchanged": self.unchanged,
            "destructive": sum(1 for h in self.hosts if h.destructive),
            "blocked": sum(1 for h in self.hosts if h.blocked),
            "addresses_moved": sum(1 for h in self.hosts if h.kind == "changed" and h.moved),
            "collisions": len(self.collisions),
            "problems": len(self.problems),
        }


def _flatten(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            yield from _flatten(sub, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list) and value and path != "ssh_keys":
        for index, sub in enumerate(value):
            yield from _flatten(sub, f"{path}[{index}]")
    else:
        yield path, value


def _addresses(host: DesiredHost | None) -> dict[str, str]:
    if host is None:
        return {}
    return {i.name: str(i.address.ip) for i in host.interfaces if i.address is not None}


def _field_changes(old: DesiredHost, new: DesiredHost) -> list[FieldChange]:
    a, b = old.to_record(), new.to_record()
    out = []
    for top in IMPACT:
        if a.get(top) == b.get(top):
            continue
        fa, fb = dict(_flatten(a.get(top), top)), dict(_flatten(b.get(top), top))
        for path in sorted(set(fa) | set(fb)):
            if fa.get(path) != fb.get(path):
                out.append(FieldChange(path, fa.get(path), fb.get(path), IMPACT[top]))
    return out


def _consequence(old: DesiredHost | None, new: DesiredHost,
                 changes: list[FieldChange]) -> tuple[list[str], bool]:
    actions: list[str] = []
    destructive = False
    was = old.state if old else None
    if new.state != was:
        actions.append(STATE_ACTION[new.state])
        destructive = new.state == "provisioned"
    elif new.state == "provisioned" and old is not None and (
        old.digests.provision != new.digests.provision
    ):
        actions.append("reprovision (disk wipe): " + ", ".join(
            sorted({c.path.split(".")[0].split("[")[0] for c in changes
                    if c.impact == "reprovision"})))
        destructive = True
    if new.state not in ("unmanaged",) and any(c.impact == "rebuild" for c in changes):
        actions.append("rebuild the boot image")
    return actions, destructive


def diff_inventories(base: Inventory, head: Inventory, *, problems: list[Problem],
                     base_name: str = "base", head_name: str = "head",
                     head_hosts: Mapping[str, DesiredHost] | None = None) -> InventoryPlan:
    """Compare two inventories; ``problems`` are head's validation problems.
    ``head_hosts``: ``desired_hosts(head)`` when the caller already has it."""
    old_hosts = desired_hosts(base)
    new_hosts = head_hosts if head_hosts is not None else desired_hosts(head)
    plans: list[HostPlan] = []
    unchanged = 0
    for name in sorted(set(old_hosts) | set(new_hosts) | (head.rejected & set(base.servers))):
        old, new = old_hosts.get(name), new_hosts.get(name)
        if new is None and name in head.rejected:
            plans.append(HostPlan(name, "invalid", addresses_old=_addresses(old),
                                  actions=("left as is: invalid in head (see problems)",)))
            continue
        if new is None:
            plans.append(HostPlan(name, "removed", addresses_old=_addresses(old),
                                  actions=("stop managing (left as is)",)))
            continue
        if old is not None and old.digests.spec == new.digests.spec:
            unchanged += 1
            continue
        changes = _field_changes(old, new) if old is not None else []
        actions, destructive = _consequence(old, new, changes)
        blocked = destructive and new.protected
        if blocked:
            actions = [f"BLOCKED (protected): would {a}" if "disk wipe" in a else a
                       for a in actions]
        plans.append(HostPlan(
            name, "added" if old is None else "changed", tuple(changes), _addresses(old),
            _addresses(new), tuple(actions), destructive and not blocked, blocked))
    base_collided = {(c.host, c.interface) for c in base.allocation.collisions}
    new_collisions = frozenset((c.host, c.interface) for c in head.allocation.collisions
                               if (c.host, c.interface) not in base_collided)
    return InventoryPlan(base_name, head_name, tuple(plans), head.allocation.collisions,
                         new_collisions, tuple(problems), unchanged)


def to_record(plan: InventoryPlan) -> dict[str, Any]:
    """JSON for ``reconciler plan --format json``."""
    return {
        "base": plan.base,
        "head": plan.head,
        "summary": plan.summary(),
        "hosts": [
            {
                "name": h.name,
                "kind": h.kind,
                "destructive": h.destructive,
                "blocked": h.blocked,
                "actions": list(h.actions),
                "addresses": {"old": dict(h.addresses_old), "new": dict(h.addresses_new)},
                "moved": {k: {"old": o, "new": n} for k, (o, n) in h.moved.items()},
                "changes": [{"path": c.path, "old": c.old, "new": c.new, "impact": c.impact}
                            for c in h.changes],
            }
            for h in plan.hosts
        ],
        "collisions": [
            {
                "host": c.host,
                "interface": c.interface,
                "subnet": c.subnet,
                "wanted": str(c.wanted),
                "got": str(c.got),
                "blocked_by": [{"address": str(b.address), "reason": b.reason}
                               for b in c.blocked_by],
                "new": (c.host, c.interface) in plan.new_collisions,
            }
            for c in plan.collisions
        ],
        "problems": [p.to_record() | {"text": str(p)} for p in plan.problems],
    }
