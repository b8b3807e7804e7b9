"""The build service's state on disk: build records, artifacts, checkin records.

Layout under the data directory (one service process owns it: ``service.lock``)::

    builds/<id>/build.json     the build record (BuildRecordDict)
    builds/<id>/uki.efi        artifacts, present only once the build completed
    builds/<id>/boot.iso
    work/<id>-<attempt>/       where a running build writes; moved into builds/<id>/ on success
    checkins-<gen>.jsonl       checkin journal: CheckinDict lines and deletion lines, appended
    trash/                     directories being deleted (renamed here first, then removed)

Every file is written under a temporary name in its directory and renamed over the target,
so a reader (or a restart) sees the old file or the new one, never half of one. Records are
kept in memory too; the disk is the copy that survives a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, NotRequired, TypedDict

from reconciler.errors import PermanentError

LOG = logging.getLogger(__name__)

# Artifact kind -> file name inside builds/<id>/ (shared constant: URLs end in these names).
ARTIFACT_NAMES: dict[str, str] = {"uki": "uki.efi", "iso": "boot.iso"}

# Build states (the seed's BuildStatus.state). Transitions, and who fires them:
#   (new)    -> pending    BuildQueue.submit: a request not seen before, or a failed one again
#   pending  -> running    a queue worker picks the build up
#   running  -> completed  the pipeline returned and the artifacts were moved into place
#   running  -> failed     the pipeline raised; the error is kept until resubmission
#   pending|running -> pending  service start: work interrupted by a stop is re-queued
#   pending|running -> failed   service start: more interrupted work than the queue holds
PENDING, RUNNING, COMPLETED, FAILED = "pending", "running", "completed", "failed"
State = Literal["pending", "running", "completed", "failed"]
IN_PROGRESS: frozenset[str] = frozenset({PENDING, RUNNING})  # resumable after a crash
FINAL: frozenset[str] = frozenset({COMPLETED, FAILED})


def now() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z, as OpenAPI's date-time format wants."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory + rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --- build records -------------------------------------------------------------------------


class BuildRecordDict(TypedDict):
    id: str
    state: str
    request: object
    attempt: str
    createdAt: str
    startedAt: NotRequired[str]
    completedAt: NotRequired[str]
    error: NotRequired[str]


@dataclass(frozen=True, slots=True)
class BuildRecord:
    id: str
    state: str
    # The JSON body as the client sent it (decoded): re-parsed by the queue after a restart.
    request: object
    created_at: datetime
    # A fresh token per (re)run: a worker finishing a build that was deleted or resubmitted
    # meanwhile sees a different attempt and throws its output away.
    attempt: str = field(default_factory=lambda: uuid.uuid4().hex)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error: str | None = None

    @property
    def tls_artifacts(self) -> bool:
        return isinstance(self.request, dict) and self.request.get("tlsArtifacts") is True

    def to_record(self) -> BuildRecordDict:
        record: BuildRecordDict = {
            "id": self.id,
            "state": self.state,
            "request": self.request,
            "attempt": self.attempt,
            "createdAt": format_time(self.created_at),
        }
        if self.started_at is not None:
            record["startedAt"] = format_time(self.started_at)
        if self.completed_at is not None:
            record["completedAt"] = format_time(self.completed_at)
        if self.error is not None:
            record["error"] = self.error
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> BuildRecord:
        def moment(key: str) -> datetime | None:
            value = record.get(key)
            return parse_time(value) if isinstance(value, str) else None

        created = moment("createdAt")
        if created is None or record.get("state") not in (PENDING, RUNNING, COMPLETED, FAILED):
            raise ValueError("createdAt or state missing or invalid")
        return cls(
            id=str(record["id"]),
            state=str(record["state"]),
            request=record.get("request"),
            created_at=created,
            attempt=str(record.get("attempt") or uuid.uuid4().hex),
            started_at=moment("startedAt"),
            completed_at=moment("completedAt"),
            error=record.get("error") if isinstance(record.get("error"), str) else None,
        )


class DataDirLocked(PermanentError):
    pass


class BuildStore:
    """Build records and artifact directories under ``<data_dir>/builds``."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir
        self.builds = data_dir / "builds"
        self.work = data_dir / "work"
        self.trash = data_dir / "trash"
        self._lock = threading.Lock()
        self._records: dict[str, BuildRecord] = {}
        self._lock_file: IO[bytes] | None = None

    # -- lifecycle --

    def open(self) -> list[BuildRecord]:
        """Lock the data directory, clear leftovers of a previous process, load the records.

        Returns every record; the queue decides what to do with interrupted ones.
        """
        for directory in (self.root, self.builds, self.work, self.trash):
            directory.mkdir(parents=True, exist_ok=True)
        lock = open(self.root / "service.lock", "wb")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise DataDirLocked(
                f"data_dir: {self.root} is in use by another reconciler serve process"
            ) from None
        self._lock_file = lock
        # Half-made output of builds that were running when the last process died.
        for leftover in (self.work, self.trash):
            for child in leftover.iterdir():
                shutil.rmtree(child, ignore_errors=True)
        for directory in sorted(self.builds.iterdir()):
            self._load(directory)
        return self.list()

    def _load(self, directory: Path) -> None:
        for stale in directory.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        try:
            raw = json.loads((directory / "build.json").read_text(encoding="utf-8"))
            record = BuildRecord.from_record(raw)
            if record.id != directory.name:
                raise ValueError(f"id {record.id!r} does not match the directory")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            LOG.warning("removing unreadable build %s: %s", directory.name, exc)
            self._discard(directory)
            return
        if record.state != COMPLETED:
            # Only a completed build owns artifacts; anything else there is not to be served.
            for name in ARTIFACT_NAMES.values():
                (directory / name).unlink(missing_ok=True)
        self._records[record.id] = record

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # -- records --

    def get(self, build_id: str) -> BuildRecord | None:
        return self._records.get(build_id)

    def list(self) -> list[BuildRecord]:
        with self._lock:
            records = list(self._records.values())
        return sorted(records, key=lambda r: (r.created_at, r.id))

    def put(self, record: BuildRecord) -> None:
        with self._lock:
            self._put_locked(record)

    def _put_locked(self, record: BuildRecord) -> None:
        directory = self.builds / record.id
        directory.mkdir(exist_ok=True)
        data = json.dumps(record.to_record(), indent=1, sort_keys=True).encode()
        write_atomic(directory / "build.json", data)
        self._records[record.id] = record

    def update_if_attempt(self, record: BuildRecord) -> bool:
        """Store ``record`` only if the stored one is the same attempt (not deleted/redone)."""
        with self._lock:
            current = self._records.get(record.id)
            if current is None or current.attempt != record.attempt:
                return False
            self._put_locked(record)
            return True

    def delete(self, build_id: str) -> bool:
        with self._lock:
            if self._records.pop(build_id, None) is None:
                return False
            self._discard(self.builds / build_id)
            return True

    def purge(self) -> int:
        with self._lock:
            ids = list(self._records)
            self._records.clear()
            for build_id in ids:
                self._discard(self.builds / build_id)
            return len(ids)

    def _discard(self, directory: Path) -> None:
        # Rename first: the build disappears at once even if removing 200 MB takes a while.
        target = self.trash / f"{directory.name}-{uuid.uuid4().hex}"
        try:
            os.rename(directory, target)
        except FileNotFoundError:
            return
        shutil.rmtree(target, ignore_errors=True)

    # -- artifacts --

    def work_dir(self, record: BuildRecord) -> Path:
        path = self.work / f"{record.id}-{record.attempt}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def complete(self, record: BuildRecord, artifacts: Mapping[str, Path]) -> bool:
        """Move the finished artifacts into the build's directory and mark it completed.

        ``artifacts`` maps a kind of :data:`ARTIFACT_NAMES` to a file on the same file
        system. Returns False (and moves nothing) when the build was deleted or resubmitted
        while it ran.
        """
        # Contents on disk before the record says completed; outside the lock, as syncing
        # hundreds of MB takes a while and the API must keep answering meanwhile.
        for source in artifacts.values():
            _fsync_path(source)
        with self._lock:
            current = self._records.get(record.id)
            if current is None or current.attempt != record.attempt:
                return False
            directory = self.builds / record.id
            for kind, source in artifacts.items():
                os.replace(source, directory / ARTIFACT_NAMES[kind])
            _fsync_path(directory)
            self._put_locked(replace(record, state=COMPLETED, completed_at=now(), error=None))
            return True

    def artifact_path(self, build_id: str, filename: str) -> Path | None:
        """The file behind /artifacts/<id>/<filename>, or None.

        Only a completed build's own artifact names resolve; the name is compared against
        the fixed set, never joined into a path as the client wrote it.
        """
        record = self._records.get(build_id)
        if record is None or record.state != COMPLETED:
            return None
        if filename not in ARTIFACT_NAMES.values():
            return None
        return self.builds / record.id / filename


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- checkin records -----------------------------------------------------------------------


class CheckinDict(TypedDict):
    id: str
    addresses: list[str]
    timestamp: str


@dataclass(frozen=True, slots=True)
class Checkin:
    id: str
    addresses: tuple[str, ...]
    timestamp: datetime

    def to_record(self) -> CheckinDict:
        return {
            "id": self.id,
            "addresses": list(self.addresses),
            "timestamp": format_time(self.timestamp),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Checkin:
        addresses = record["addresses"]
        if not isinstance(record["id"], str) or not isinstance(addresses, list):
            raise ValueError("id or addresses invalid")
        return cls(record["id"], tuple(str(a) for a in addresses), parse_time(record["timestamp"]))


class CheckinStore:
    """Registered checkin ids and their addresses, persisted as an append-only journal.

    Every change is applied in memory and appended to ``checkins-<generation>.jsonl`` as one
    JSON line (a record, or ``{"id": ..., "deleted": true}``) with a single ``write`` to a
    descriptor opened ``O_APPEND``, before the call returns. A 204 therefore means the change
    survives a restart: a booted server's PUT loop, which stops at its first 204, is never
    lost, and a registered id still accepts PUTs after the service comes back. Not fsynced: it
    survives the process, not a power cut.

    The journal is compacted (every live record written to the next generation under a
    temporary name, renamed, the old generation removed) when it opens, when it is purged, and
    once it holds more than ``COMPACT_FACTOR`` times as many lines as live records (at least
    ``COMPACT_MIN`` lines). A line cut short by a crash is skipped on the next open, and the
    compaction at open leaves a clean file; the change it carried never got its 204.
    """

    PATTERN = "checkins-*.jsonl"
    COMPACT_MIN = 4096
    COMPACT_FACTOR = 4

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir
        self._generation = 0
        self._lock = threading.Lock()
        self._records: dict[str, Checkin] = {}
        self._lines: dict[str, str] = {}  # id -> its JSON line, so a compaction is one join
        self._fd = -1
        self._appended = 0  # lines in the current generation

    def _snapshot(self, generation: int) -> Path:
        return self.root / f"checkins-{generation:016x}.jsonl"

    @property
    def path(self) -> Path:
        """The current journal."""
        return self._snapshot(self._generation)

    def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".checkins-*.tmp"):
            stale.unlink(missing_ok=True)
        snapshots = sorted(self.root.glob(self.PATTERN))
        for older in snapshots[:-1]:  # a crash between a rename and the unlink after it
            older.unlink()
        if snapshots:
            current = snapshots[-1]
            self._generation = int(current.stem.split("-", 1)[1], 16)
            text = current.read_text(encoding="utf-8", errors="replace")
            for number, line in enumerate(text.splitlines(), 1):
                try:
                    self._replay(json.loads(line))
                except (ValueError, KeyError, TypeError) as exc:
                    LOG.warning("%s:%d: skipping unreadable checkin record: %s",
                                current, number, exc)
        with self._lock:
            self._compact()

    def _replay(self, record: Mapping[str, Any]) -> None:
        if record.get("deleted") is True:
            checkin_id = record["id"]
            if not isinstance(checkin_id, str):
                raise TypeError("id is not a string")
            self._records.pop(checkin_id, None)
            self._lines.pop(checkin_id, None)
        else:
            self._set(Checkin.from_record(record))

    def close(self) -> None:
        """Nothing to flush: every change was written before its call returned."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def _set(self, record: Checkin) -> str:
        line = json.dumps(record.to_record(), ensure_ascii=False)
        self._records[record.id] = record
        self._lines[record.id] = line
        return line

    def _compact(self) -> None:
        """With the lock held: every live record into the next generation, then append there."""
        data = "".join(line + "\n" for line in self._lines.values()).encode("utf-8")
        previous = self._snapshot(self._generation)
        new = self._snapshot(self._generation + 1)
        write_atomic(new, data, durable=False)
        fd = os.open(new, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._generation, self._appended = fd, self._generation + 1, len(self._lines)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(previous)

    def _append(self, line: str) -> None:
        """With the lock held: one line onto the journal, all of it or an OSError."""
        if self._fd < 0:
            raise OSError("checkins: the store is not open")
        data = (line + "\n").encode("utf-8")
        while data:
            written = os.write(self._fd, data)
            data = data[written:]
        self._appended += 1

    def _change(self, checkin_id: str, record: Checkin | None) -> None:
        """With the lock held: apply in memory and journal it; on a failed write, undo both."""
        old, old_line = self._records.get(checkin_id), self._lines.get(checkin_id)
        if record is None:
            self._records.pop(checkin_id, None)
            self._lines.pop(checkin_id, None)
            line = json.dumps({"id": checkin_id, "deleted": True}, ensure_ascii=False)
        else:
            line = self._set(record)
        try:
            self._append(line)
        except OSError as exc:
            if old is None or old_line is None:
                self._records.pop(checkin_id, None)
                self._lines.pop(checkin_id, None)
            else:
                self._records[checkin_id], self._lines[checkin_id] = old, old_line
            raise OSError(f"checkins: writing the journal failed: {exc}") from exc
        if self._appended > max(self.COMPACT_MIN, self.COMPACT_FACTOR * len(self._lines)):
            try:
                self._compact()
            except OSError as exc:  # the change is journaled; keep appending to this file
                LOG.warning("checkins: compacting %s failed, will retry: %s", self.path, exc)

    def register(self, checkin_id: str, addresses: tuple[str, ...] = ()) -> Checkin:
        with self._lock:
            record = Checkin(checkin_id, addresses, now())
            self._change(checkin_id, record)
        return record

    def update(self, checkin_id: str, addresses: tuple[str, ...]) -> Checkin | None:
        """Replace the addresses of a registered id; None when the id is not registered."""
        with self._lock:
            if checkin_id not in self._records:
                return None
            record = Checkin(checkin_id, addresses, now())
            self._change(checkin_id, record)
        return record

    def get(self, checkin_id: str) -> Checkin | None:
        return self._records.get(checkin_id)

    def delete(self, checkin_id: str) -> bool:
        with self._lock:
            if checkin_id not in self._records:
                return False
            self._change(checkin_id, None)
        return True

    def purge(self) -> int:
        with self._lock:
            records, lines = dict(self._records), dict(self._lines)
            self._records.clear()
            self._lines.clear()
            try:
                self._compact()
            except OSError:
                self._records.update(records)
                self._lines.update(lines)
                raise
        return len(records)

    def __iter__(self) -> Iterator[Checkin]:
        return iter(list(self._records.values()))
