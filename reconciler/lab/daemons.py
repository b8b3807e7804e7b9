"""Background daemons without systemd: started by ``start-stop-daemon``, tracked by pid file.

PID 1 here is not systemd (LAB.md), so every lab daemon runs in the foreground under
``start-stop-daemon --background --make-pidfile --output LOG``: one pid file per daemon that
names the real process (``ip netns exec``, ``unshare`` and ``sh -c 'exec ...'`` all exec in
place), its output in a log file. Stopping is SIGTERM, a deadline, then SIGKILL.

A pid file is trusted only while ``/proc/<pid>/cmdline`` still mentions the lab directory, so
a pid reused after a crash is never signalled.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.adapters.run import run, which
from reconciler.errors import ToolFailed

LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Daemon:
    name: str
    pidfile: Path
    logfile: Path
    marker: str  # a string its command line contains (the lab directory)


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (PID 1 here may not reap) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state letter follows the parenthesised command name, which may contain spaces.
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def read_pid(daemon: Daemon) -> int | None:
    """The daemon's pid if its pid file names a live process that is really ours."""
    try:
        pid = int(daemon.pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if alive(pid) and daemon.marker in cmdline(pid):
        return pid
    return None


def start(
    daemon: Daemon,
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start ``argv`` in the background; return its pid. The daemon must not fork itself."""
    daemon.pidfile.parent.mkdir(parents=True, exist_ok=True)
    daemon.logfile.parent.mkdir(parents=True, exist_ok=True)
    daemon.pidfile.unlink(missing_ok=True)
    args = [os.fspath(a) for a in argv]
    program = args[0] if os.sep in args[0] else which(args[0])
    run(
        [
            "start-stop-daemon", "--start", "--background", "--make-pidfile",
            "--pidfile", daemon.pidfile, "--output", daemon.logfile,
            "--startas", program, "--", *args[1:],
        ],
        timeout=30,
        env=env,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            pid = int(daemon.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            time.sleep(0.05)
            continue
        if alive(pid):
            LOG.debug("%s started, pid %d", daemon.name, pid)
            return pid
        break
    raise ToolFailed(f"{daemon.name} exited at once: {log_tail(daemon)}")


def log_tail(daemon: Daemon, size: int = 1500) -> str:
    try:
        data = daemon.logfile.read_bytes()[-size:]
    except FileNotFoundError:
        return "(no log)"
    return data.decode(errors="replace").strip() or "(empty log)"


def wait_until_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Poll until none of ``pids`` runs; return those still running at the deadline."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if alive(p)]
    return left


def terminate(pids: Sequence[int], *, timeout: float = 15.0) -> None:
    """SIGTERM ``pids``, wait up to ``timeout``, SIGKILL whatever is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            if alive(pid):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        left = wait_until_gone(pids, timeout)
        if not left:
            return
        LOG.warning("still running after %s: %s", sig.name, left)
    raise ToolFailed(f"processes {left} survived SIGKILL")


def stop(daemon: Daemon, *, timeout: float = 15.0) -> bool:
    """Stop the daemon if it runs; True when something was stopped."""
    pid = read_pid(daemon)
    if pid is None:
        daemon.pidfile.unlink(missing_ok=True)
        return False
    terminate([pid], timeout=timeout)
    daemon.pidfile.unlink(missing_ok=True)
    LOG.debug("%s stopped", daemon.name)
    return True
