"""``reconciler run``: the reconcile loop, and ``reconciler status``: what it knows.

``run`` keeps a mirror of the inventory branch under the data directory, fetches it every
``poll_interval`` (jittered), and drives every server to its committed state. The build service
is started embedded (same process, its own listener) unless ``build_service_url`` names an
external one; either way the engine uses its REST API. SIGTERM/SIGINT: running steps are cut at
once (their history row says ``interrupted``) and resume from their restart point at the next
start. One ``run`` per data directory (a lock file).
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

# The record `reconciler status --json` prints is the status page's and the fleet API's.
from reconciler.engine.statusview import last_operation as last_operation
from reconciler.engine.statusview import status_record
from reconciler.errors import InputError

LOG = logging.getLogger(__name__)

FLAGS: tuple[tuple[str, str, str, str], ...] = (
    ("--repo", "repo", "URL|PATH", "the inventory repository (any URL git can fetch)"),
    ("--branch", "branch", "NAME", "the branch to follow (default main)"),
    ("--path", "path", "SUBDIR", "the inventory's directory inside the repository"),
    ("--data-dir", "data_dir", "DIR", "state, mirror, keys (default /var/lib/reconciler)"),
    ("--poll-interval", "poll_interval", "SECONDS", "fetch interval (default 60, jittered)"),
    ("--build-service-url", "build_service_url", "URL",
     "use this build service instead of the embedded one"),
)


def register(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run", help="drive every server in a git inventory to its committed state",
        description="The reconcile loop (docs/engine.md).")
    run.add_argument("--config", type=Path, metavar="FILE", help="YAML settings file")
    for flag, key, metavar, text in FLAGS:
        run.add_argument(flag, dest=key, metavar=metavar, help=text)
    run.add_argument("--once", action="store_true",
                     help="one pass, then wait for the started workflows and exit")
    run.set_defaults(func=run_handler)
    status = subparsers.add_parser(
        "status", help="the fleet revision and each server's state, step and conditions",
        description="What `reconciler run` knows, read from its state database.")
    status.add_argument("server", nargs="?", help="one server, with its step history")
    status.add_argument("--data-dir", type=Path, default=Path("/var/lib/reconciler"),
                        metavar="DIR")
    status.add_argument("--json", action="store_true", help="machine-readable")
    status.add_argument("--wait", action="store_true",
                        help="wait until the server (or every managed one) is Ready at the "
                        "fetched revision; exit 1 when one is Stalled or at --timeout")
    status.add_argument("--timeout", type=float, default=1800.0, metavar="SECONDS")
    status.set_defaults(func=status_handler)


# --- run ------------------------------------------------------------------------------------


def _lock(data_dir: Path) -> TextIO:
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / "run.lock", "a+")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise InputError(f"{data_dir}: another `reconciler run` uses this data directory") \
            from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def run_handler(args: argparse.Namespace) -> int:
    from reconciler.engine.config import load_run_settings

    config: dict[str, Any] = {}
    if args.config is not None:
        import yaml

        try:
            loaded = yaml.safe_load(args.config.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"{args.config}: cannot read settings: {exc}") from None
        if not isinstance(loaded, dict):
            raise InputError(f"{args.config}: expected a mapping of settings")
        config = loaded
    flags = {key: getattr(args, key) for _, key, _, _ in FLAGS}
    settings = load_run_settings(config, str(args.config or "config"), flags=flags)
    lock = _lock(settings.data_dir)
    try:
        return asyncio.run(_run(settings, once=args.once))
    finally:
        lock.close()


async def _settle(reconciler: Any) -> None:
    """``--once``: wait for the started workflows, then pass again (to record what they
    reached and to commit the reports they produced) until nothing is left running."""
    while True:
        await reconciler.executor.wait_idle()
        await reconciler.reports.settle()
        await reconciler.reconcile()
        await reconciler.reports.settle()
        if not reconciler.executor.tasks:
            return


def writer(settings: Any) -> Any:
    """The commit-back writer of inspection reports, or None when ``writeback`` is off."""
    from reconciler.engine.writeback import ReportWriter

    return ReportWriter.from_settings(settings) if settings.writeback else None


def pause_text(pause: Any) -> str:
    """One line for a :class:`reconciler.engine.brake.Pause` (or None)."""
    if pause is None:
        return "not paused"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(pause.at))
    return f"paused since {when} by {pause.by}" + (f": {pause.reason}" if pause.reason else "")


async def _run(settings: Any, *, once: bool) -> int:
    from reconciler.engine.compose import open_engine
    from reconciler.engine.loop import Reconciler, run_forever
    from reconciler.engine.reports import Reports
    from reconciler.engine.source import GitSource

    async with open_engine(settings) as engine:
        executor = engine.executor
        from reconciler.engine.writeback import auth_env

        source = GitSource(settings.repo, settings.branch, settings.path, settings.clone_dir,
                           timeout=settings.git_timeout, env=auth_env(settings))
        reports = Reports(executor, writer(settings), oob_interval=settings.oob_interval,
                          backoff_base=settings.backoff_base, backoff_max=settings.backoff_max,
                          on_written=engine.wake.set)
        reconciler = Reconciler(source, executor, engine.render_settings,
                                paused=engine.brake,
                                observe_interval=settings.observe_interval,
                                orphan_retention=settings.orphan_retention, reports=reports)
        executor.render = reconciler.render
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        LOG.info("reconciling %s (%s%s) every %g s; data %s; build service %s", settings.repo,
                 settings.branch, f", {settings.path}" if settings.path else "",
                 settings.poll_interval, settings.data_dir, engine.service_url)
        if engine.brake():
            LOG.warning("paused (%s): no step starts until `reconciler resume`",
                        pause_text(engine.brake.read()))
        try:
            if not once:
                await run_forever(reconciler, settings.poll_interval, stop, wake=engine.wake)
                return 0
            await reconciler.tick()
            waiter = asyncio.create_task(_settle(reconciler))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            waiter.cancel()
        finally:
            await reports.stop()
        if reconciler.desired.fetched is None:
            return 1  # nothing was fetched: the error is in the log and in status
    return 0


# --- status ---------------------------------------------------------------------------------


def _condition_text(row: dict[str, Any]) -> str:
    parts = []
    for c in row["conditions"]:
        if c["type"] == "Ready" or c["status"] == "True":
            parts.append(f"{c['type']}={c['status']} {c['reason']}")
    return ", ".join(parts) or "-"


def _settled(record: dict[str, Any]) -> tuple[bool, list[str]]:
    """(all Ready at the fetched revision, the servers that are Stalled)."""
    fetched = record["revision"]["lastFetched"]
    ready, stalled = True, []
    rows = [r for r in record["hosts"] if r["desiredState"] not in (None, "unmanaged")
            and not r["orphaned"]]
    for row in rows:
        conds = {c["type"]: c for c in row["conditions"]}
        if "Stalled" in conds:
            stalled.append(f"{row['name']}: {conds['Stalled']['message']}")
        elif conds.get("Ready", {}).get("status") != "True" or \
                row["lastAppliedRevision"] != fetched:
            ready = False
    return ready and bool(rows) and fetched is not None, stalled


def _wait(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    seen: dict[str, str] = {}
    while True:
        try:
            record = status_record(args.data_dir, args.server)
        except InputError:
            record = {"revision": {"lastFetched": None}, "hosts": []}
        for row in record["hosts"]:
            where = f"{row['workflow']}/{row['step']}" if row["workflow"] else \
                _condition_text(row)
            if seen.get(row["name"]) != where:
                seen[row["name"]] = where
                print(f"{time.strftime('%H:%M:%S')} {row['name']}: {where}", flush=True)
        ready, stalled = _settled(record)
        if stalled:
            print("stalled: " + "; ".join(stalled), file=sys.stderr)
            return 1
        if ready:
            return 0
        if time.monotonic() > deadline:
            print(f"not ready after {args.timeout:g} s", file=sys.stderr)
            return 1
        time.sleep(2)  # a human-facing poll of the state database, not a test's


def status_handler(args: argparse.Namespace) -> int:
    from reconciler.engine.brake import Pause

    if args.wait:
        code = _wait(args)
        if code or args.json:
            return code
    record = status_record(args.data_dir, args.server)
    if args.json:
        json.dump(record, sys.stdout, indent=2)
        print()
        return 0
    rev = record["revision"]
    print(f"revision: fetched {rev['lastFetched'] or '-'} ({rev['lastFetchedSubject'] or ''})")
    print(f"          attempted {rev['lastAttemptedRevision'] or '-'}, "
          f"applied {rev['lastAppliedRevision'] or '-'}")
    if rev.get("lastFetchError"):
        print(f"          last fetch failed: {rev['lastFetchError']}")
    if rev.get("lastWritebackError"):
        print(f"          inspection reports not committed: {rev['lastWritebackError']}")
    if record.get("paused"):
        print(f"PAUSED:   {pause_text(Pause(**record['paused']))} (`reconciler resume`)")
    print()
    header = f"{'SERVER':<16} {'DESIRED':<12} {'STEP':<28} {'CONDITIONS':<44} APPLIED"
    print(header)
    for row in record["hosts"]:
        step = f"{row['workflow']}/{row['step']}" if row["workflow"] else "-"
        written = row["progress"].get("written_bytes")
        if written:
            step += f" {written / 2**20:.0f} MiB"
        applied = (row["lastAppliedRevision"] or "-").split("@sha1:")[-1][:12]
        print(f"{row['name']:<16} {row['desiredState'] or '-':<12} {step:<28} "
              f"{_condition_text(row):<44} {applied}")
        message = next((c["message"] for c in row["conditions"]
                        if c["type"] == "Stalled" or (c["type"] == "Ready" and
                                                      c["status"] != "True")), None)
        if message:
            print(f"{'':<16} {message}")
        if row["lastOperation"]:
            steps = ", ".join(f"{h['step']} {h['seconds']:.0f}s" if h["seconds"] is not None
                              else f"{h['step']} …" for h in row["lastOperation"])
            print(f"{'':<16} last operation: {steps}")
        for h in row.get("history", []):
            print(f"{'':<16} {time.strftime('%H:%M:%S', time.localtime(h['started']))} "
                  f"{h['workflow']}/{h['step']}: {h['result'] or 'running'} "
                  f"{h['message'] or ''}")
    return 0
