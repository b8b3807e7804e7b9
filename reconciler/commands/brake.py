"""``reconciler pause`` / ``resume``: the emergency brake, outside git (git may be what is wrong).

They write or remove ``<data-dir>/paused.json`` (:mod:`reconciler.engine.brake`); the running
``reconciler run`` starts no new step while it exists, however many servers are waiting, and
the steps already running end at their current step. The brake survives restarts.
``POST /api/v1/pause`` and ``/api/v1/resume`` do the same over HTTP.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from pathlib import Path
from typing import Any

from reconciler.errors import InputError, PermanentError

DEFAULT_DATA_DIR = Path("/var/lib/reconciler")


def register(subparsers: Any) -> None:
    pause = subparsers.add_parser(
        "pause", help="stop new steps on every server (the emergency brake)",
        description="Set the emergency brake: the reconcile loop of DIR starts no new step on "
        "any server until `reconciler resume`; running steps end at their current step.")
    pause.add_argument("--reason", default="", metavar="TEXT",
                       help="why (shown by `reconciler status`, the status page and the log)")
    pause.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, metavar="DIR",
                       help="the data directory of `reconciler run` (default %(default)s)")
    pause.set_defaults(func=pause_handler)
    resume = subparsers.add_parser(
        "resume", help="release the emergency brake: steps start again",
        description="Release the emergency brake set by `reconciler pause` (or the API).")
    resume.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, metavar="DIR",
                        help="the data directory of `reconciler run` (default %(default)s)")
    resume.set_defaults(func=resume_handler)


def who() -> str:
    """``cli:<user>``: the user behind sudo when there is one."""
    user = os.environ.get("SUDO_USER")
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
            user = f"uid {os.getuid()}"
    return f"cli:{user}"


def _data_dir(path: Path) -> Path:
    """A directory that exists: a typo must not set a brake no loop ever reads."""
    if not path.is_dir():
        raise InputError(f"--data-dir: {path} is not a directory",
                         hint="give the data directory of `reconciler run`")
    return path


def since(record: Any) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.at))
    return f"since {when} by {record.by}" + (f": {record.reason}" if record.reason else "")


def pause_handler(args: argparse.Namespace) -> int:
    from reconciler.engine import brake

    data_dir = _data_dir(args.data_dir)
    if len(args.reason) > brake.MAX_REASON:
        raise InputError(f"--reason: longer than {brake.MAX_REASON} characters")
    try:
        record = brake.pause(data_dir, who(), args.reason)
    except OSError as exc:
        raise PermanentError(f"{brake.pause_file(data_dir)}: cannot write: {exc.strerror}",
                             hint="run as the user of `reconciler run`") from None
    print(f"paused {since(record)}")
    print("no new step starts on any server until `reconciler resume`; running steps end at "
          "their current step")
    if not (data_dir / "state.db").exists():
        print(f"note: no reconcile loop has run in {data_dir} yet; the brake holds from its "
              "start", file=sys.stderr)
    return 0


def resume_handler(args: argparse.Namespace) -> int:
    from reconciler.engine import brake

    data_dir = _data_dir(args.data_dir)
    record = brake.read(data_dir)
    try:
        released = brake.resume(data_dir)
    except OSError as exc:
        raise PermanentError(f"{brake.pause_file(data_dir)}: cannot remove: {exc.strerror}",
                             hint="run as the user of `reconciler run`") from None
    if not released or record is None:
        print(f"not paused ({data_dir}): nothing to resume")
        return 0
    print(f"resumed (was paused {since(record)})")
    print("steps start again at the loop's next pass")
    return 0
