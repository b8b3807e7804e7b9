"""What the reconcile loop knows, as one record: ``reconciler status --json``, the status page
and the fleet API (``/api/v1/hosts``, ``/api/v1/revision``) all serve :func:`status_record`,
so the CLI and the service cannot disagree.

Read from the state database (:mod:`reconciler.adapters.statedb`) and the brake file
(:mod:`reconciler.engine.brake`); the engine process writes both, readers open their own
connection (SQLite WAL: a reader never blocks the writer).

Argo CD keeps sync and health apart; so does each row here:

- ``condition`` (health, from the Flux conditions): ``Stalled`` when Stalled=True,
  ``Reconciling`` when Reconciling=True, ``Ready`` when Ready=True, else ``Unknown``
  (suspended, unmanaged, orphaned, never reconciled);
- ``sync`` (desired vs applied): ``Synced`` when the applied state is the desired one at the
  revision the loop works on, ``Unmanaged`` for an unmanaged or orphaned server (the loop does
  not drive it), else ``OutOfSync``.

``orphaned`` and ``invalid`` are flags beside both. ``counts`` counts the whole fleet however
the rows are filtered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reconciler.engine import brake
from reconciler.errors import InputError
from reconciler.plan.status import READY, RECONCILING, STALLED

HEALTH = (READY, RECONCILING, STALLED, "Unknown")
SYNC = ("Synced", "OutOfSync", "Unmanaged")
FLAGS = ("orphaned", "invalid")
# ``?condition=`` takes a health value or a flag; ``?sync=`` a sync value.
FILTERS: Mapping[str, tuple[str, ...]] = {"condition": HEALTH + FLAGS, "sync": SYNC}

# The fleet record's keys, as the loop writes them (reconciler/engine/loop.py).
REVISION_KEYS = ("lastFetched", "lastFetchedAt", "lastFetchedSubject", "lastAttemptedRevision",
                 "lastAppliedRevision", "lastFetchError", "lastFetchErrorAt", "lastError",
                 "lastPassAt", "lastAppliedAt", "lastWritebackError", "reportsPending")
# The public part of a workflow's scratch: never a URL (an image or artifact URL may carry
# credentials), a key or an address.
PROGRESS_KEYS = ("build_id", "disk", "downloaded_bytes", "written_bytes", "image_bytes")
WRITE_STEP = "write-image"
HISTORY_LIST, HISTORY_HOST = 20, 50  # step runs read per server: for the list, for one server


class UnknownServer(InputError):
    """The server asked for is not in the state database."""


def check_filter(key: str, value: str | None) -> str | None:
    """``value`` if it is one of ``FILTERS[key]`` (or None); else InputError naming ``key``."""
    if value is None or value in FILTERS[key]:
        return value
    shown = value if len(value) <= 40 else value[:40] + "..."
    raise InputError(f"{key}: {shown!r} is not one of {', '.join(FILTERS[key])}")


def status_record(data_dir: Path, server: str | None = None, *, condition: str | None = None,
                  sync: str | None = None, missing_ok: bool = False) -> dict[str, Any]:
    """``reconciler status --json``; also what the status page and API serve.

    ``server``: that server's row only, with its step history (UnknownServer when it is not in
    the state). ``condition``/``sync``: only the rows matching (``counts`` stays the fleet's).
    ``missing_ok``: no state database yet reads as an empty fleet, not an InputError."""
    from reconciler.adapters.statedb import StateDB

    condition = check_filter("condition", condition)
    sync = check_filter("sync", sync)
    path = data_dir / "state.db"
    if not path.exists():
        if not missing_ok:
            raise InputError(f"{data_dir}: no state database (has `reconciler run` started "
                             "here?)")
        if server is not None:
            raise UnknownServer(f"{server}: no such server in {path}")
        return _record({}, [], data_dir)
    db = StateDB(path)
    try:
        fleet = db.fleet()
        hosts = db.hosts()
        if server is not None and server not in hosts:
            raise UnknownServer(f"{server}: no such server in {path}")
        attempted = fleet.get("lastAttemptedRevision")
        rows = []
        for name, st in hosts.items():
            if server is not None and name != server:
                continue
            history = db.history(name, limit=HISTORY_HOST if server else HISTORY_LIST)
            conds = [c.to_record() for c in st.conditions]
            rows.append({
                "name": name,
                "condition": health_of(conds),
                "sync": _sync(st.desired_state, st.applied_state, st.last_applied_revision,
                              st.orphaned, attempted),
                "desiredState": st.desired_state,
                "appliedState": st.applied_state,
                "workflow": st.workflow,
                "step": st.step,
                "stepStarted": st.step_started,
                "progress": progress(st.progress),
                "conditions": conds,
                "lastAppliedRevision": st.last_applied_revision,
                "lastAttemptedRevision": st.last_attempted_revision,
                "lastError": st.last_error,
                "bmcError": st.observe_error,
                "attempts": st.attempts,
                "nextRetry": st.next_retry,
                "orphaned": st.orphaned,
                "invalid": st.invalid,
                "lastOperation": last_operation(history),
                **({"history": [h.to_record() for h in history]} if server else {}),
            })
        return _record(fleet, rows, data_dir, condition, sync)
    finally:
        db.close()


def revision_record(data_dir: Path) -> dict[str, Any]:
    """The fleet revision and the brake: :func:`status_record` without the servers (a read
    of the fleet table, whatever the fleet's size). No state database yet: all None."""
    from reconciler.adapters.statedb import StateDB

    path = data_dir / "state.db"
    fleet: dict[str, Any] = {}
    if path.exists():
        db = StateDB(path)
        try:
            fleet = db.fleet()
        finally:
            db.close()
    return _revision(fleet, data_dir)


def _revision(fleet: Mapping[str, Any], data_dir: Path) -> dict[str, Any]:
    pause = brake.read(data_dir)
    return {"revision": {k: fleet.get(k) for k in REVISION_KEYS},
            "paused": pause.to_record() if pause is not None else None}


def _record(fleet: Mapping[str, Any], rows: list[dict[str, Any]], data_dir: Path,
            condition: str | None = None, sync: str | None = None) -> dict[str, Any]:
    return {
        **_revision(fleet, data_dir),
        "counts": counts(rows),
        "hosts": [r for r in rows if matches(r, condition, sync)],
    }


def health_of(conds: Iterable[Mapping[str, Any]]) -> str:
    """Stalled over Reconciling over Ready; Unknown when none of them is True."""
    true = {c["type"] for c in conds if c["status"] == "True"}
    return next((h for h in (STALLED, RECONCILING, READY) if h in true), "Unknown")


def _sync(desired: str | None, applied: str | None, applied_revision: str | None,
          orphaned: bool, attempted: str | None) -> str:
    if orphaned or desired in (None, "unmanaged"):
        return "Unmanaged"
    if applied == desired and applied_revision is not None and applied_revision == attempted:
        return "Synced"
    return "OutOfSync"


def matches(row: Mapping[str, Any], condition: str | None, sync: str | None) -> bool:
    if sync is not None and row["sync"] != sync:
        return False
    if condition is None:
        return True
    if condition in FLAGS:
        return bool(row[condition])
    return bool(row["condition"] == condition)


def counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    health = dict.fromkeys(HEALTH, 0)
    sync = dict.fromkeys(SYNC, 0)
    for row in rows:
        health[row["condition"]] += 1
        sync[row["sync"]] += 1
    return {"total": len(rows), "health": health, "sync": sync,
            "orphaned": sum(1 for r in rows if r["orphaned"]),
            "invalid": sum(1 for r in rows if r["invalid"])}


def progress(scratch: Mapping[str, Any]) -> dict[str, Any]:
    """The public part of a workflow's scratch (never a URL's credentials or a key)."""
    return {k: scratch[k] for k in PROGRESS_KEYS if k in scratch}


def progress_text(row: Mapping[str, Any]) -> str:
    """"writing image 63 %" (the image's size known), "1536 MiB written", or ""."""
    if row["step"] != WRITE_STEP:
        return ""
    done = row["progress"].get("written_bytes")
    total = row["progress"].get("image_bytes")
    if not isinstance(done, int) or isinstance(done, bool) or done < 0:
        return ""
    if isinstance(total, int) and not isinstance(total, bool) and total > 0:
        return f"writing image {min(100, done * 100 // total)} %"
    return f"writing image: {done / 2**20:.0f} MiB written"


def last_operation(history: list[Any]) -> list[dict[str, Any]]:
    """The step runs of the last workflow run: from its latest start at its first step."""
    from reconciler.machines.workflows import WORKFLOWS

    for i in range(len(history) - 1, -1, -1):
        workflow = WORKFLOWS.get(history[i].workflow)
        if workflow is not None and history[i].step == workflow.first:
            return [h.to_record() for h in history[i:] if h.workflow == workflow.name]
    return [h.to_record() for h in history]
