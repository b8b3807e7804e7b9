"""``reconciler scaffold SERVER [--inventory DIR]``: print a server file filled from the
server's inspection report (:mod:`reconciler.model.scaffold`), for the operator to review and
commit. Writes nothing.

The output is checked the way ``validate`` checks the file it would replace (the same
inventory with it in place of ``servers/.../SERVER.yaml``): its problems, if any, go to stderr
and the exit status is 1; the text is printed either way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from reconciler.errors import InputError
from reconciler.log import redact
from reconciler.model.inspection import report_path
from reconciler.model.inventory import parse_inventory, read_worktree, server_files
from reconciler.model.scaffold import scaffold
from reconciler.model.yamlio import parse


def _scaffold(args: argparse.Namespace) -> int:
    root = Path(args.inventory)
    if not root.is_dir():
        raise InputError(f"{args.inventory}: not a directory",
                         hint="give the inventory repository's root with --inventory")
    name = args.server
    files, refused = read_worktree(root)
    paths = [p for p, n in server_files(files).items() if n == name]
    if len(paths) != 1:
        raise InputError(f"{name}: " + ("no server file servers/**/" + name + ".yaml"
                                        if not paths else "several files: " + ", ".join(paths)),
                         hint=f"in {root}")
    path = paths[0]
    inventory, problems = parse_inventory(files, refused=refused)
    if name in inventory.rejected:
        mine = [redact(str(p)) for p in problems if p.file == path]
        raise InputError(f"{path} has problems: fix them first: "
                         + ("; ".join(mine[:5]) or "see reconciler validate"))
    report = inventory.inspections.get(name)
    if report is None:
        where = report_path(name)
        invalid = [redact(str(p)) for p in problems if p.file == where]
        if invalid:
            raise InputError(f"{where} is not a valid report: " + "; ".join(invalid[:5]))
        raise InputError(f"{name}: no inspection report ({where})",
                         hint="commit the server with state: inspected, wait for the "
                              "reconciler's report commit, and pull")
    text = files[path].decode("utf-8", "replace")
    first = text.split("\n", 1)[0]
    out = scaffold(name, parse(path, files[path]).data, report,
                   subnets=sorted(inventory.subnets), modeline=first)
    print(out, end="")
    _, after = parse_inventory({**files, path: out.encode()}, refused=refused)
    bad = [p for p in after if p.file == path]
    for problem in bad:
        print(f"reconciler: scaffold: {redact(str(problem))}", file=sys.stderr)
    return 1 if bad else 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "scaffold", help="print a server file filled from its inspection report",
        description="Print servers/SERVER.yaml filled from inspection/SERVER.yaml (primary "
                    "MAC, disk by WWN or serial, architecture) with comments on what to review. "
                    "Writes nothing.")
    p.add_argument("server", metavar="SERVER", help="server name")
    p.add_argument("--inventory", default=".", metavar="DIR",
                   help="inventory repository root (default: the current directory)")
    p.set_defaults(func=_scaffold)
