"""The ``reconciler`` command line.

Each command lives in a module of ``reconciler/commands/`` that exposes
``register(subparsers)``, which adds its full parser with ``set_defaults(func=handler)``;
``handler(args) -> int`` returns the exit status. Errors derived from
:class:`~reconciler.errors.ReconcilerError` print as one line on stderr.

Start-up imports no command module: :data:`COMMANDS` gives ``--help`` each command's line, and
only the module of the command being run is imported. Importing them all (sushy, git,
jsonschema) made ``reconciler --version`` take 0.4 s instead of 0.04 s (bench/cli_startup.py).
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

# Command -> (module whose register() adds its full parser, the line `reconciler --help` shows),
# in the order `--help` lists them. tests/unit/test_cli.py checks each module registers its
# commands with these same lines.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("reconciler.commands.run",
            "drive every server in a git inventory to its committed state"),
    "status": ("reconciler.commands.run",
               "the fleet revision and each server's state, step and conditions"),
    "pause": ("reconciler.commands.brake",
              "stop new steps on every server (the emergency brake)"),
    "resume": ("reconciler.commands.brake", "release the emergency brake: steps start again"),
    "validate": ("reconciler.commands.inventory", "check an inventory repository, every problem"),
    "render": ("reconciler.commands.inventory", "print a server's seed files and build request"),
    "plan": ("reconciler.commands.inventory", "what merging an inventory change would do"),
    "scaffold": ("reconciler.commands.scaffold",
                 "print a server file filled from its inspection report"),
    "build": ("reconciler.commands.build",
              "build a UKI and a bootable ISO with a per-server overlay"),
    "serve": ("reconciler.commands.serve", "run the build / artifact / checkin HTTP service"),
    "images": ("reconciler.commands.images", "build the ephemeral OS and the lab target image"),
    "bmc": ("reconciler.commands.bmc",
            "operate one BMC over Redfish (power, virtual media, boot override, inventory)"),
    "lab": ("reconciler.commands.lab",
            "bring up a virtual lab: UEFI VMs behind a Redfish emulator in a network namespace"),
}  # fmt: skip


def command_name(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first word that is not an option.

    The top-level options (``-h``, ``--version``, ``-v``) take no value, so that word is it.
    """
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser: the full parser of ``command``, a one-line stub for the others.

    Only ``command``'s module is imported; a stub is never parsed, since argv names
    ``command``. A module that fails to import is an error, not a missing command.
    """
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="Make every physical server match its committed state: Redfish, UKIs, no PXE.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    if command in COMMANDS:
        module = COMMANDS[command][0]
        importlib.import_module(module).register(subparsers)
        if command not in subparsers.choices:
            raise RuntimeError(f"{module}.register() adds no {command!r} command (cli.COMMANDS)")
    for name, (_, text) in COMMANDS.items():
        if name not in subparsers.choices:  # not added by the module of `command`
            subparsers.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(command_name(argv))
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
