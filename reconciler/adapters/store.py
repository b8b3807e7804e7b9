"""The build service's state on disk: build records, artifacts, checkin records.

Layout under the data directory (one service process owns it: ``service.lock``)::

    builds/<id>/build.json     the build record (BuildRecordDict)
    builds/<id>/uki.efi        artifacts, present only once the build completed
    builds/<id>/boot.iso
    work/<id>-<attempt>/       where a running build writes; moved into builds/<id>/ on success
    checkins-<gen>.jsonl       every checkin record (CheckinDict), one JSON line each
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


class _Batch:
    """Changes that one snapshot write makes durable."""

    __slots__ = ("done", "error", "led")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.led = False  # a change of this batch has taken on writing it


class CheckinStore:
    """Registered checkin ids and their addresses, persisted with group commit.

    Every change is applied in memory and returns only once a snapshot holding it is on disk
    (``checkins-<generation>.jsonl``, written to a temporary name and renamed), so a 204
    means the change survives a restart: a booted server's PUT loop, which stops at its first
    204, is never lost, and a registered id still accepts PUTs after the service comes back.
    The request that finds no write in progress writes the snapshot itself; changes arriving
    meanwhile wait and are covered by the next write, so concurrent PUTs share one write.
    Each snapshot gets a new name and the previous one is removed after the rename: renaming
    over an existing file makes ext4 flush the new data first (auto_da_alloc), five times
    the cost here. The highest generation on disk is the current one. Not fsynced: it
    survives the process, not a power cut.
    """

    PATTERN = "checkins-*.jsonl"

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir
        self._generation = 0
        self._lock = threading.Lock()
        self._records: dict[str, Checkin] = {}
        self._lines: dict[str, str] = {}  # id -> its JSON line, so a snapshot is one join
        self._writing = False
        self._idle = threading.Condition(self._lock)  # the next batch's writer waits here
        self._batch = _Batch()  # the changes the next snapshot will hold

    def _snapshot(self, generation: int) -> Path:
        return self.root / f"checkins-{generation:016x}.jsonl"

    @property
    def path(self) -> Path:
        """The current snapshot."""
        return self._snapshot(self._generation)

    def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".checkins-*.tmp"):
            stale.unlink(missing_ok=True)
        snapshots = sorted(self.root.glob(self.PATTERN))
        for older in snapshots[:-1]:  # a crash between a rename and the unlink after it
            older.unlink()
        if not snapshots:
            return
        current = snapshots[-1]
        self._generation = int(current.stem.split("-", 1)[1], 16)
        for number, line in enumerate(current.read_text(encoding="utf-8").splitlines(), 1):
            try:
                record = Checkin.from_record(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                LOG.warning("%s:%d: skipping unreadable checkin record: %s", current, number, exc)
                continue
            self._set(record)

    def close(self) -> None:
        """Nothing to flush: every change was written before its call returned."""

    def _set(self, record: Checkin) -> None:
        self._records[record.id] = record
        self._lines[record.id] = json.dumps(record.to_record(), ensure_ascii=False)

    def _join(self) -> tuple[_Batch, bool]:
        """Called with the lock held after a change: the batch whose write covers it, and
        whether this caller writes that batch (the first change of a batch does)."""
        batch = self._batch
        lead, batch.led = not batch.led, True
        return batch, lead

    def _commit(self, batch: _Batch, lead: bool) -> None:
        """Called without the lock: return once ``batch`` is on disk (or raise its error).

        The others of a batch sleep on its event and wake once, when it is written; only the
        writer of the next batch waits for the write in progress to end.
        """
        if not lead:
            batch.done.wait()
        else:
            with self._lock:
                while self._writing:
                    self._idle.wait()
                self._writing = True
                self._batch = _Batch()  # changes from now on ride the next write
                data = "".join(line + "\n" for line in self._lines.values()).encode("utf-8")
                # Plain strings: pathlib costs more than the write at thousands of PUTs/s.
                previous = os.path.join(self.root, f"checkins-{self._generation:016x}.jsonl")
                new = os.path.join(self.root, f"checkins-{self._generation + 1:016x}.jsonl")
            try:
                write_atomic(Path(new), data, durable=False)
                self._generation += 1  # only the writer (self._writing) touches it
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(previous)
            except BaseException as exc:
                batch.error = exc
                raise
            finally:
                with self._lock:
                    self._writing = False
                    self._idle.notify()
                batch.done.set()
        if batch.error is not None:
            raise OSError(f"checkins: writing the snapshot failed: {batch.error}")

    def register(self, checkin_id: str, addresses: tuple[str, ...] = ()) -> Checkin:
        with self._lock:
            record = Checkin(checkin_id, addresses, now())
            self._set(record)
            ticket = self._join()
        self._commit(*ticket)
        return record

    def update(self, checkin_id: str, addresses: tuple[str, ...]) -> Checkin | None:
        """Replace the addresses of a registered id; None when the id is not registered."""
        with self._lock:
            if checkin_id not in self._records:
                return None
            record = Checkin(checkin_id, addresses, now())
            self._set(record)
            ticket = self._join()
        self._commit(*ticket)
        return record

    def get(self, checkin_id: str) -> Checkin | None:
        return self._records.get(checkin_id)

    def delete(self, checkin_id: str) -> bool:
        with self._lock:
            if self._records.pop(checkin_id, None) is None:
                return False
            del self._lines[checkin_id]
            ticket = self._join()
        self._commit(*ticket)
        return True

    def purge(self) -> int:
        with self._lock:
            count = len(self._records)
            self._records.clear()
            self._lines.clear()
            ticket = self._join()
        self._commit(*ticket)
        return count

    def __iter__(self) -> Iterator[Checkin]:
        return iter(list(self._records.values()))
