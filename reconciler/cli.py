"""The ``reconciler`` command line.

Each command group lives in ``reconciler/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser with ``set_defaults(func=handler)``;
``handler(args) -> int`` returns the exit status. Errors derived from
:class:`~reconciler.errors.ReconcilerError` print as one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from reconciler import __version__
from reconciler import log as logsetup
from reconciler.errors import ReconcilerError
from reconciler.log import redact

# Command modules, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = (
    "reconciler.commands.run",
    "reconciler.commands.inventory",
    "reconciler.commands.build",
    "reconciler.commands.serve",
    "reconciler.commands.images",
    "reconciler.commands.bmc",
    "reconciler.commands.lab",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="Make every physical server match its committed state: Redfish, UKIs, no PXE.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # command group not built yet
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logsetup.setup(logging.DEBUG if args.verbose else logging.INFO)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args))
    except ReconcilerError as exc:
        print(f"reconciler: error: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `reconciler render ... | head`: the reader left; say nothing more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
