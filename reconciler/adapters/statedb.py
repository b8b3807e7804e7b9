"""The reconciler's state: one SQLite database (stdlib ``sqlite3``, WAL) in the data directory.

Tables:

- ``hosts``: one JSON record per server (:class:`reconciler.plan.status.HostStatus`).
- ``history``: the operation history, one row per step run: host, workflow, step, start, end,
  result (``ok``, ``error``, ``interrupted``), message. A step's row is inserted, in the same
  transaction as the host record naming that step, *before* the step starts; a restart finds
  rows without an end and closes them as ``interrupted`` (the resume shows in the history).
- ``fleet``: key -> JSON (the fleet revision: fetched, attempted, applied).
- ``keys``: per server and boot image, the ephemeral OS's SSH host key the reconciler baked
  into the overlay, and the installed OS's; the private halves are needed to build the image
  again with the same key (and so the same build id). Never logged, never in status output.

Every write is one transaction, committed before the caller goes on (``synchronous=FULL``), so
``kill -9`` at any moment leaves the last committed transition. The database file is created
0600: it holds host private keys.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.errors import PermanentError
from reconciler.plan.status import HostStatus

SCHEMA = """
CREATE TABLE IF NOT EXISTS hosts (name TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    host TEXT NOT NULL, workflow TEXT NOT NULL, step TEXT NOT NULL,
    started REAL NOT NULL, ended REAL, result TEXT, message TEXT
);
CREATE INDEX IF NOT EXISTS history_host ON history (host, id);
CREATE TABLE IF NOT EXISTS fleet (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    host TEXT NOT NULL, stage TEXT NOT NULL, target TEXT NOT NULL,
    private TEXT NOT NULL, public TEXT NOT NULL, PRIMARY KEY (host, stage)
);
"""
HISTORY_KEEP = 200  # rows kept per host


@dataclass(frozen=True, slots=True)
class StepRun:
    id: int
    host: str
    workflow: str
    step: str
    started: float
    ended: float | None
    result: str | None
    message: str | None

    def to_record(self) -> dict[str, Any]:
        return {"workflow": self.workflow, "step": self.step, "started": self.started,
                "ended": self.ended, "result": self.result, "message": self.message,
                "seconds": None if self.ended is None else round(self.ended - self.started, 3)}


class StateDB:
    """Thread-safe (one connection, one lock): the engine's executor threads share it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise PermanentError(f"state database {path}: {exc}",
                                 hint="move the file away to start with an empty state") from None
        self._lock = threading.Lock()
        # Host records as committed, kept by the one writer (``reconciler run`` holds the data
        # directory's lock): a pass reads 5,000 of them without decoding JSON.
        self._hosts: dict[str, HostStatus] | None = None
        self._staged: dict[str, HostStatus | None] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._staged = {}
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                self._staged = {}
                raise
            self._db.execute("COMMIT")
            if self._hosts is not None:
                for name, status in self._staged.items():
                    if status is None:
                        self._hosts.pop(name, None)
                    else:
                        self._hosts[name] = status
            self._staged = {}

    # -- hosts ---------------------------------------------------------------------------

    def hosts(self) -> dict[str, HostStatus]:
        with self._lock:
            if self._hosts is None:
                rows = self._db.execute("SELECT name, record FROM hosts").fetchall()
                self._hosts = {name: HostStatus.from_record(json.loads(rec))
                               for name, rec in rows}
            return dict(sorted(self._hosts.items()))

    def host(self, name: str) -> HostStatus | None:
        return self.hosts().get(name)

    def _put(self, db: sqlite3.Connection, status: HostStatus) -> None:
        db.execute("INSERT OR REPLACE INTO hosts (name, record) VALUES (?, ?)",
                   (status.name, json.dumps(status.to_record(), sort_keys=True)))
        self._staged[status.name] = status

    def put(self, status: HostStatus) -> None:
        with self._tx() as db:
            self._put(db, status)

    def put_many(self, statuses: Mapping[str, HostStatus]) -> None:
        with self._tx() as db:
            for status in statuses.values():
                self._put(db, status)

    def delete(self, name: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM hosts WHERE name = ?", (name,))
            db.execute("DELETE FROM keys WHERE host = ?", (name,))
            self._staged[name] = None

    # -- steps ---------------------------------------------------------------------------

    def begin_step(self, status: HostStatus, started: float) -> int:
        """Commit ``status`` (naming the step) and open the step's history row, together."""
        assert status.workflow and status.step
        with self._tx() as db:
            self._put(db, status)
            cur = db.execute(
                "INSERT INTO history (host, workflow, step, started) VALUES (?, ?, ?, ?)",
                (status.name, status.workflow, status.step, started))
            db.execute(
                "DELETE FROM history WHERE host = ? AND id < (SELECT min(id) FROM (SELECT id "
                "FROM history WHERE host = ? ORDER BY id DESC LIMIT ?))",
                (status.name, status.name, HISTORY_KEEP))
            return int(cur.lastrowid or 0)

    def end_step(self, run_id: int, status: HostStatus, ended: float, result: str,
                 message: str = "") -> None:
        """Close the step's history row and commit ``status``, together."""
        with self._tx() as db:
            self._put(db, status)
            db.execute("UPDATE history SET ended = ?, result = ?, message = ? WHERE id = ?",
                       (ended, result, message[:2000], run_id))

    def close_interrupted(self, now: float) -> int:
        """At start: steps left open by a killed process are ``interrupted``."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE history SET ended = ?, result = 'interrupted', "
                "message = 'the reconciler stopped during this step' WHERE ended IS NULL",
                (now,))
            return cur.rowcount

    def history(self, name: str, limit: int = 50) -> list[StepRun]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, host, workflow, step, started, ended, result, message FROM history "
                "WHERE host = ? ORDER BY id DESC LIMIT ?", (name, limit)).fetchall()
        return [StepRun(*row) for row in reversed(rows)]

    # -- fleet ---------------------------------------------------------------------------

    def fleet(self) -> dict[str, Any]:
        with self._lock:
            rows = self._db.execute("SELECT key, value FROM fleet").fetchall()
        return {key: json.loads(value) for key, value in rows}

    def set_fleet(self, **values: Any) -> None:
        with self._tx() as db:
            for key, value in values.items():
                db.execute("INSERT OR REPLACE INTO fleet (key, value) VALUES (?, ?)",
                           (key, json.dumps(value)))

    # -- SSH host keys -------------------------------------------------------------------

    def host_key(self, host: str, stage: str, target: str) -> tuple[str, str] | None:
        """(private, public) of ``host``'s ``stage`` host key made for ``target``."""
        with self._lock:
            row = self._db.execute("SELECT private, public FROM keys WHERE host = ? AND "
                                   "stage = ? AND target = ?", (host, stage, target)).fetchone()
        return (row[0], row[1]) if row else None

    def set_host_key(self, host: str, stage: str, target: str, private: str,
                     public: str) -> None:
        """Keep one key per host and stage: a new target's key replaces the old one."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO keys (host, stage, target, private, public) "
                       "VALUES (?, ?, ?, ?, ?)", (host, stage, target, private, public))

