"""``reconciler validate | render | plan``: the inventory commands.

- ``validate PATH``: every problem, one per line (``file:line: path: message``); exit 0 when
  clean, 1 when there are problems. Template overrides in the inventory are rendered for every
  valid host, both purposes, so one that fails for some host is a problem here, not at boot.
  Then the warnings (``WARNING ...``), which do not change the exit status: server files that
  contradict their inspection reports (:mod:`reconciler.model.evidence`), reports of servers
  the inventory does not have.
- ``render HOST --repo PATH``: the rendered seed files and the build request.
- ``plan --repo PATH [--base REV] [--head REV] [--format markdown|json]``: what merging head
  would do. Defaults: head is the working tree, base is HEAD. Exit 1 when head has problems.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from reconciler.adapters import secrets
from reconciler.adapters.git import WORKTREE, GitInventory, Snapshot
from reconciler.errors import InputError, ReconcilerError
from reconciler.log import redact
from reconciler.model import (
    Inventory,
    Problem,
    desired_hosts,
    evidence,
    load_inventory,
    parse_inventory,
)
from reconciler.model.inventory import ParseCache
from reconciler.model.problems import sort_problems
from reconciler.plan.inventory_diff import diff_inventories, to_record
from reconciler.plan.markdown import render_markdown
from reconciler.render import DEFAULT_PUBLIC_URL, Renderer, RenderSettings, template_problems


def _directory(path: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"{path}: not a directory", hint="give the inventory repository's root")
    return p


def _git(path: Path) -> GitInventory | None:
    try:
        return GitInventory(path)
    except InputError:
        return None


def load_worktree(path: Path) -> tuple[Inventory, list[Problem]]:
    """The inventory on disk, with IPAM seniority from git history when PATH is in a repo."""
    repo = _git(path)
    seniority = repo.seniority("HEAD") if repo is not None and repo.has_commits() else None
    return load_inventory(path, seniority=seniority)


def _validate(args: argparse.Namespace) -> int:
    root = _directory(args.path)
    inventory, problems = load_worktree(root)
    hosts = desired_hosts(inventory) if inventory.templates or inventory.inspections else {}
    if inventory.templates:
        problems = sort_problems(problems + template_problems(inventory, hosts))
    notes = evidence.warnings(inventory, hosts)
    if args.check_credentials:
        for _, server in sorted(inventory.servers.items()):
            if server.state == "unmanaged":
                continue
            try:
                secrets.resolve(server.bmc.credentials, directory=args.secrets_dir)
            except ReconcilerError as exc:
                problems.append(Problem(server.file, None, "bmc.credentials", str(exc)))
    # Problems never echo a secret they found; redacting each line as well keeps any the
    # screens cannot name (a private key, a URL's password) out of the report and CI logs.
    if args.format == "json":
        print(json.dumps({"problems": [{k: redact(v) if isinstance(v, str) else v
                                        for k, v in (p.to_record() | {"text": str(p)}).items()}
                                       for p in problems],
                          "warnings": [redact(line) for line in notes],
                          "servers": len(inventory.servers),
                          "rejected": sorted(inventory.rejected)}, indent=2))
    else:
        for problem in problems:
            print(redact(str(problem)))
        for line in notes:
            print(redact(line))
        print(f"{len(inventory.servers) + len(inventory.rejected)} servers, "
              f"{len(inventory.rejected)} rejected, {len(problems)} problems"
              + (f", {len(notes)} warnings" if notes else ""), file=sys.stderr)
    return 1 if problems else 0


def _settings(args: argparse.Namespace) -> RenderSettings:
    keys: list[str] = []
    for path in args.ssh_key or ():
        try:
            keys += [k.strip() for k in Path(path).read_text().splitlines() if k.strip()]
        except OSError as exc:
            raise InputError(f"--ssh-key {path}: {exc.strerror}") from None
    public = args.public_url or os.environ.get("RECONCILER_PUBLIC_URL") or DEFAULT_PUBLIC_URL
    return RenderSettings(public_url=public, tls_artifacts=args.tls_artifacts,
                          ssh_keys=tuple(keys))


def _render(args: argparse.Namespace) -> int:
    root = _directory(args.repo)
    inventory, problems = load_worktree(root)
    if args.host in inventory.rejected:
        mine = [str(p) for p in problems if Path(p.file).stem == args.host]
        raise InputError(f"{args.host}: invalid: " + ("; ".join(mine) or "see validate"))
    hosts = desired_hosts(inventory)
    if args.host not in hosts:
        raise InputError(f"{args.host}: no such server in {root}/servers",
                         hint="known: " + ", ".join(sorted(hosts)[:10]))
    renderer = Renderer(inventory.templates, _settings(args))
    out = renderer.render(hosts[args.host], args.purpose, inspection_id=args.inspection_id)
    if args.format == "json":
        print(json.dumps({"meta-data": out.meta_data, "user-data": out.user_data,
                          "network-config": out.network_config,
                          "ephemeral-user-data": out.ephemeral_user_data,
                          "checkin-url": out.checkin_url, "build-request": out.build_request},
                         indent=2))
        return 0
    sections: list[tuple[str, str | None]] = [
        ("meta-data", out.meta_data),
        ("user-data (target disk)", out.user_data),
        ("network-config", out.network_config),
        ("user-data (ephemeral OS)", out.ephemeral_user_data),
        ("checkin-url", out.checkin_url),
    ]
    for title, text in sections:
        if text is not None:
            print(f"# ---- {title} ----")
            print(text, end="" if text.endswith("\n") else "\n")
    print("# ---- build request (POST /api/v1/builds) ----")
    print(json.dumps(out.build_request, indent=2))
    return 0


def _snapshot_inventory(
    snap: Snapshot, cache: ParseCache | None = None
) -> tuple[Inventory, list[Problem]]:
    return parse_inventory(snap.files, seniority=snap.seniority, cache=cache,
                           refused=snap.refused)


def plan_revisions(root: Path, base: str | None, head: str | None) -> dict[str, Any]:
    """Compute the plan; returns the JSON record plus the markdown text."""
    repo = GitInventory(root)
    head_rev = head or WORKTREE
    head_snap = repo.snapshot(head_rev)
    if base is None and not repo.has_commits():
        base_snap = Snapshot("empty", {}, {}, {})
    else:
        known = {head_snap.blobs[p]: d for p, d in head_snap.files.items()}
        base_snap = repo.snapshot(base or "HEAD", known=known)
    # Files unchanged between base and head are parsed once.
    cache: ParseCache = {}
    base_inv, _ = _snapshot_inventory(base_snap, cache)
    head_inv, problems = _snapshot_inventory(head_snap, cache)
    head_hosts = desired_hosts(head_inv)
    problems = sort_problems(problems + template_problems(head_inv, head_hosts))
    plan = diff_inventories(base_inv, head_inv, problems=problems, head_hosts=head_hosts,
                            base_name=base_snap.revision, head_name=head_snap.revision,
                            policy=head_inv.policy)
    return {"record": to_record(plan), "markdown": render_markdown(plan)}


def _plan(args: argparse.Namespace) -> int:
    root = _directory(args.repo)
    result = plan_revisions(root, args.base, args.head)
    if args.format == "json":
        print(json.dumps(result["record"], indent=2))
    else:
        print(result["markdown"])
    return 1 if result["record"]["problems"] else 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("validate", help="check an inventory repository, every problem",
                              description="Report every problem of the inventory at PATH.")
    p.add_argument("path", metavar="PATH", help="inventory repository root")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--check-credentials", action="store_true",
                   help="also resolve every server's credentials reference (env/secrets dir)")
    p.add_argument("--secrets-dir", type=Path, default=None,
                   help="directory of credentials files (default $RECONCILER_SECRETS_DIR)")
    p.set_defaults(func=_validate)

    p = subparsers.add_parser("render", help="print a server's seed files and build request")
    p.add_argument("host", metavar="HOST")
    p.add_argument("--repo", required=True, metavar="PATH", help="inventory repository root")
    p.add_argument("--purpose", choices=("provision", "inspect"), default="provision")
    p.add_argument("--inspection-id", help="UUID of the inspection (purpose inspect)")
    p.add_argument("--public-url", help="build service URL for checkin URLs "
                   f"(default $RECONCILER_PUBLIC_URL or {DEFAULT_PUBLIC_URL})")
    p.add_argument("--tls-artifacts", action="store_true", help="ask for https artifact URLs")
    p.add_argument("--ssh-key", action="append", metavar="FILE",
                   help="public key file of the reconciler itself (repeatable)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=_render)

    p = subparsers.add_parser("plan", help="what merging an inventory change would do",
                              description="Diff the inventory between two git revisions.")
    p.add_argument("--repo", required=True, metavar="PATH", help="inventory repository root")
    p.add_argument("--base", metavar="REV", help="before (default HEAD)")
    p.add_argument("--head", metavar="REV", help="after (default: the working tree)")
    p.add_argument("--format", choices=("markdown", "json"), default="markdown")
    p.set_defaults(func=_plan)
