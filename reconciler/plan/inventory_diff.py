"""What a change to the inventory would do: pure diff of two validated inventories.

``reconciler plan`` prints this for a pull request. Per host: added / removed / changed fields
(each with its effects from :data:`reconciler.model.impact.FIELD_EFFECTS`), new or moved
addresses, and the consequence: the very action the reconcile loop would take, decided by
:func:`reconciler.plan.decide.plan` with the base revision as "observed = as last applied".

A removed server is forgotten, never touched; one whose file became invalid keeps its last good
desired state (the base's), exactly as the loop does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.model import evidence
from reconciler.model.desired import DesiredHost, desired_hosts
from reconciler.model.impact import FIELD_EFFECTS, Effect, effects_of
from reconciler.model.inventory import Inventory
from reconciler.model.ipam import Collision
from reconciler.model.policy import Policy
from reconciler.model.problems import Problem
from reconciler.plan import decide

# What the plan says about effects that need no action of their own.
NOTES: Mapping[Effect, str] = {
    Effect.BOOT_IMAGE: "boot image changes: used the next time a workflow boots the server",
    Effect.DELIVERY: "BMC connection or boot method changes: used from the next Redfish call",
}


@dataclass(frozen=True, slots=True)
class FieldChange:
    path: str
    old: Any
    new: Any
    effects: frozenset[Effect]

    @property
    def impact(self) -> str:
        return ", ".join(sorted(self.effects))


@dataclass(frozen=True, slots=True)
class HostPlan:
    name: str
    kind: str  # added | removed | changed | invalid
    changes: tuple[FieldChange, ...] = ()
    addresses_old: Mapping[str, str] = field(default_factory=dict)  # interface -> address
    addresses_new: Mapping[str, str] = field(default_factory=dict)
    actions: tuple[str, ...] = ()  # what the loop does, then notes
    action: decide.Action | None = None

    @property
    def destructive(self) -> bool:
        """The loop would wipe this server's disk in this revision."""
        return self.action is not None and self.action.destructive and self.action.runnable

    @property
    def blocked(self) -> bool:
        """Destructive, but held by a safety rule (protected, max_destructive)."""
        return self.action is not None and self.action.blocked

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
    # Head's server files that contradict their inspection reports, and reports of servers
    # head does not have (``WARNING ...`` lines, reconciler.model.evidence.warnings).
    warnings: tuple[str, ...] = ()

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
    for top, effects in FIELD_EFFECTS.items():
        if a.get(top) == b.get(top):
            continue
        fa, fb = dict(_flatten(a.get(top), top)), dict(_flatten(b.get(top), top))
        for path in sorted(set(fa) | set(fb)):
            if fa.get(path) != fb.get(path):
                out.append(FieldChange(path, fa.get(path), fb.get(path), effects))
    return out


def _lines(action: decide.Action, changes: list[FieldChange]) -> tuple[str, ...]:
    text = action.message
    if action.destructive and action.workflow == "provision":
        fields = sorted({c.path.split(".")[0].split("[")[0] for c in changes
                         if Effect.DISK in c.effects})
        if fields:
            text += " (changed: " + ", ".join(fields) + ")"
    lines = [text]
    effects = effects_of(c.path for c in changes)
    if action.kind == decide.Kind.NONE:
        lines += [note for effect, note in NOTES.items() if effect in effects]
    return tuple(lines)


def diff_inventories(base: Inventory, head: Inventory, *, problems: list[Problem],
                     base_name: str = "base", head_name: str = "head",
                     head_hosts: Mapping[str, DesiredHost] | None = None,
                     policy: Policy | None = None) -> InventoryPlan:
    """Compare two inventories; ``problems`` are head's validation problems.
    ``head_hosts``: ``desired_hosts(head)`` when the caller already has it; ``policy``: head's.
    """
    old_hosts = desired_hosts(base)
    new_hosts = head_hosts if head_hosts is not None else desired_hosts(head)
    # A server invalid in head keeps its last good desired state, as in the loop.
    effective = dict(new_hosts)
    for name in head.rejected & old_hosts.keys():
        effective[name] = old_hosts[name]
    status, observed = decide.as_applied(old_hosts)
    actions = {a.host: a for a in decide.plan(effective, observed, status,
                                              policy or Policy(), 0.0)}
    plans: list[HostPlan] = []
    unchanged = 0
    for name in sorted(set(old_hosts) | set(new_hosts) | (head.rejected & set(base.servers))):
        old, new = old_hosts.get(name), new_hosts.get(name)
        action = actions.get(name)
        if new is None and name in head.rejected:
            plans.append(HostPlan(name, "invalid", addresses_old=_addresses(old),
                                  actions=("left as is: invalid in head, keeps its last good "
                                           "state (see problems)",), action=action))
            continue
        if new is None:
            assert action is not None
            plans.append(HostPlan(name, "removed", addresses_old=_addresses(old),
                                  actions=(action.message,), action=action))
            continue
        assert action is not None
        if old is not None and old.digests.spec == new.digests.spec:
            unchanged += 1
            continue
        changes = _field_changes(old, new) if old is not None else []
        plans.append(HostPlan(
            name, "added" if old is None else "changed", tuple(changes), _addresses(old),
            _addresses(new), _lines(action, changes), action))
    base_collided = {(c.host, c.interface) for c in base.allocation.collisions}
    new_collisions = frozenset((c.host, c.interface) for c in head.allocation.collisions
                               if (c.host, c.interface) not in base_collided)
    return InventoryPlan(base_name, head_name, tuple(plans), head.allocation.collisions,
                         new_collisions, tuple(problems), unchanged,
                         tuple(evidence.warnings(head, new_hosts)))


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
                "hold": h.action.hold.value if h.action and h.action.hold else None,
                "workflow": h.action.workflow if h.action else None,
                "actions": list(h.actions),
                "addresses": {"old": dict(h.addresses_old), "new": dict(h.addresses_new)},
                "moved": {k: {"old": o, "new": n} for k, (o, n) in h.moved.items()},
                "changes": [{"path": c.path, "old": c.old, "new": c.new,
                             "effects": sorted(c.effects)}
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
        "warnings": list(plan.warnings),
    }
