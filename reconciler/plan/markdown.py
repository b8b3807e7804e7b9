"""``reconciler plan --format markdown``: ready to post as a pull-request comment.

GitHub caps a comment at 65,536 characters, so long sections are cut with a count of what
was left out; ``--format json`` always has everything.
"""

from __future__ import annotations

from typing import Any

from reconciler.plan.inventory_diff import HostPlan, InventoryPlan

MAX_ROWS = 200
MAX_DETAILS = 50
MAX_LINES = 100


def _code(value: Any) -> str:
    if value is None:
        text = "∅"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return "`" + text.replace("`", "'") + "`"


def _address_cell(h: HostPlan) -> str:
    if h.kind == "added":
        return ", ".join(f"{a} (new)" for a in h.addresses_new.values()) or "dhcp"
    if h.kind in ("removed", "invalid"):
        return ", ".join(f"{a} (released)" if h.kind == "removed" else a
                         for a in h.addresses_old.values()) or "-"
    moved = h.moved
    if moved:
        return ", ".join(f"{o or '∅'} → **{n or '∅'}**" for o, n in moved.values())
    return ", ".join(h.addresses_new.values()) or "dhcp"


def _impact_cell(h: HostPlan) -> str:
    text = "; ".join(h.actions) or "no action"
    if h.destructive:
        return f"**DESTRUCTIVE** {text}"
    if h.blocked:
        return text.replace("BLOCKED", "**BLOCKED**", 1)
    return text


def render_markdown(plan: InventoryPlan) -> str:
    s = plan.summary()
    lines = [f"## Inventory plan `{plan.base[:12]}` → `{plan.head[:12]}`", ""]
    radius = (f"**Blast radius:** {s['added']} added, {s['changed']} changed, "
              f"{s['removed']} removed, {s['invalid']} invalid, {s['unchanged']} unchanged; "
              f"**{s['destructive']} DESTRUCTIVE** (disk wipe), {s['blocked']} blocked "
              f"(protected or over max_destructive), {s['addresses_moved']} with moved addresses, "
              f"{s['collisions']} IPAM collisions, {s['problems']} validation problems.")
    lines += [radius, ""]
    if not plan.hosts:
        lines += ["No host changes.", ""]
    else:
        lines += ["| Host | Change | Address | Consequence |", "|---|---|---|---|"]
        ordered = sorted(plan.hosts, key=lambda h: (not h.destructive, not h.blocked, h.name))
        for h in ordered[:MAX_ROWS]:
            lines.append(f"| `{h.name}` | {h.kind} | {_address_cell(h)} | {_impact_cell(h)} |")
        if len(ordered) > MAX_ROWS:
            lines.append(f"| … | {len(ordered) - MAX_ROWS} more hosts (see --format json) | | |")
        lines.append("")
        detailed = [h for h in ordered if h.changes]
        for h in detailed[:MAX_DETAILS]:
            mark = " — **DESTRUCTIVE**" if h.destructive else (
                " — **BLOCKED**" if h.blocked else "")
            lines += [f"<details><summary><code>{h.name}</code>: "
                      f"{len(h.changes)} field(s){mark}</summary>", ""]
            for c in h.changes[:MAX_LINES]:
                lines.append(f"- `{c.path}`: {_code(c.old)} → {_code(c.new)} ({c.impact})")
            lines += ["", "</details>", ""]
        if len(detailed) > MAX_DETAILS:
            lines += [f"… field details of {len(detailed) - MAX_DETAILS} more hosts omitted.", ""]
    if plan.collisions:
        lines += [f"### IPAM collisions ({len(plan.collisions)})", "",
                  "Resolved by seniority (earlier-added server keeps its slot; the later one "
                  "takes the next free address upward):", ""]
        for col in plan.collisions[:MAX_LINES]:
            new = " **(new)**" if (col.host, col.interface) in plan.new_collisions else ""
            lines.append(f"- {col.describe()}{new}")
        if len(plan.collisions) > MAX_LINES:
            lines.append(f"- … {len(plan.collisions) - MAX_LINES} more")
        lines.append("")
    if plan.warnings:
        lines += [f"### Warnings ({len(plan.warnings)})", "",
                  "Server files that contradict their inspection reports (inspection/): check "
                  "the file before the reconciler writes a disk (it refuses to).", "", "```"]
        lines += list(plan.warnings[:MAX_LINES])
        if len(plan.warnings) > MAX_LINES:
            lines.append(f"… {len(plan.warnings) - MAX_LINES} more")
        lines += ["```", ""]
    if plan.problems:
        lines += [f"### Validation problems in head ({len(plan.problems)})", "", "```"]
        lines += [str(p) for p in plan.problems[:MAX_LINES]]
        if len(plan.problems) > MAX_LINES:
            lines.append(f"… {len(plan.problems) - MAX_LINES} more")
        lines += ["```", ""]
    return "\n".join(lines)
