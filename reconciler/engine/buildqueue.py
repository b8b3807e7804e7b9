"""The bounded build queue and its worker threads.

HTTP handlers only call :meth:`BuildQueue.submit` (validate, deduplicate, enqueue); the
worker threads run the artifacts pipeline (which runs subprocesses) and move its output into
the store. A full queue refuses new work (:class:`QueueFull`, HTTP 503) instead of growing.

The build id is the SHA-256 of the normalized request (``reconciler.artifacts.request``), so
an identical request returns the existing build; a failed build is removed and built again
when it is submitted again. State transitions are listed in ``reconciler.adapters.store``.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from queue import Queue
from typing import Protocol

from reconciler.adapters.store import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    PENDING,
    RUNNING,
    BuildRecord,
    BuildStore,
    now,
)
from reconciler.artifacts.request import BuildRequest, build_id, normalized, parse_build_request
from reconciler.errors import InputError, TemporaryError
from reconciler.log import redact

LOG = logging.getLogger(__name__)

_MAX_ERROR = 2000


class Built(Protocol):
    @property
    def uki(self) -> Path: ...

    @property
    def iso(self) -> Path: ...


class Builder(Protocol):
    """``reconciler.artifacts.pipeline.build_artifacts`` or a fake with the same shape."""

    def __call__(
        self, req: BuildRequest, *, kernel: Path, initramfs: Path, out_dir: Path
    ) -> Built: ...


class QueueFull(TemporaryError):
    pass


def default_builder() -> Builder:
    from reconciler.artifacts.pipeline import build_artifacts

    return build_artifacts


@dataclass(frozen=True, slots=True)
class BaseArtifacts:
    kernel: Path
    initramfs: Path


def resolve_base(images: Path, req: BuildRequest) -> BaseArtifacts:
    """``images/<arch>/<name>`` for kernel and initramfs; InputError names the missing one."""
    # Plain os.path: this runs on every (re)submission, and pathlib costs more than the stat.
    arch_dir = os.path.join(images, req.architecture)
    found = {}
    for field, name in (("kernel", req.kernel), ("initramfs", req.initramfs)):
        path = os.path.join(arch_dir, name)
        # request.py already refuses '/', '.', '..': the name cannot leave arch_dir.
        if not os.path.isfile(path):
            raise InputError(
                f"{field}: {name!r} is not a base artifact for architecture {req.architecture}",
                hint=f"available: {', '.join(available(Path(arch_dir))) or 'none'}",
            )
        found[field] = Path(path)
    return BaseArtifacts(found["kernel"], found["initramfs"])


def available(arch_dir: Path) -> list[str]:
    try:
        return sorted(p.name for p in arch_dir.iterdir() if p.is_file() and p.suffix != ".json")
    except OSError:
        return []


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact(text)[:_MAX_ERROR]


@dataclass(frozen=True, slots=True)
class _Item:
    id: str
    attempt: str


class BuildQueue:
    def __init__(
        self,
        store: BuildStore,
        images: Path,
        *,
        workers: int,
        maxsize: int,
        builder: Builder | None = None,
        on_change: Callable[[BuildRecord], None] | None = None,
    ) -> None:
        self.store = store
        self.images = images
        self.maxsize = maxsize
        self._workers = workers
        self._builder = builder
        self._on_change = on_change
        self._lock = threading.Lock()
        # Unbounded underneath so stop sentinels always fit; the bound is _waiting.
        self._queue: Queue[_Item | None] = Queue()
        self._waiting = 0
        self._threads: list[threading.Thread] = []
        self._stopping = False

    # -- lifecycle --

    def start(self, records: Iterable[BuildRecord]) -> None:
        """Re-queue builds a previous process left pending or running, then start workers."""
        if self._builder is None:
            self._builder = default_builder()
        for record in records:
            if record.state not in IN_PROGRESS:
                continue
            with self._lock:
                if self._waiting < self.maxsize:
                    again = replace(
                        record, state=PENDING, attempt=_new_attempt(), started_at=None
                    )
                    self._transition(record, again, "interrupted by a restart: queued again")
                    self._enqueue(again)
                    continue
            failed = replace(
                record,
                state=FAILED,
                completed_at=now(),
                error="interrupted by a service restart and the queue was full; submit again",
            )
            self._transition(record, failed, failed.error or "")
        for n in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"build-worker-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float) -> bool:
        """Let running builds finish for up to ``timeout`` seconds; True if all stopped.

        Workers are daemon threads: a build still running at the deadline dies with the
        process and is run again on the next start (its record still says running).
        """
        self._stopping = True  # builds still waiting stay pending: the next start runs them
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    # -- API used by the handlers --

    def parse(self, body: object) -> tuple[BuildRequest, str, BaseArtifacts]:
        """Everything that can refuse a request, before any side effect."""
        req = parse_build_request(body)
        return req, build_id(req), resolve_base(self.images, req)

    def submit(self, body: object) -> tuple[BuildRecord, bool]:
        """The build for ``body``: (record, True) if queued now, (existing, False) if known.

        Raises InputError (400) or QueueFull (503).
        """
        req, build_id_, _ = self.parse(body)
        with self._lock:
            existing = self.store.get(build_id_)
            if existing is not None and existing.state != FAILED:
                return existing, False
            if self._waiting >= self.maxsize:
                raise QueueFull(
                    f"build queue full ({self.maxsize} waiting)", delay=5.0, hint="retry later"
                )
            if existing is not None:
                # A failed build is removed and built again on resubmission.
                self.store.delete(build_id_)
            record = BuildRecord(
                id=build_id_,
                state=PENDING,
                request=normalized(req),
                created_at=now(),
                attempt=_new_attempt(),
            )
            self._transition(None, record, "submitted")
            self._enqueue(record)
            return record, True

    def delete(self, build_id_: str) -> bool:
        with self._lock:
            return self.store.delete(build_id_)

    def purge(self) -> int:
        with self._lock:
            return self.store.purge()

    def waiting(self) -> int:
        return self._waiting

    @property
    def stopping(self) -> bool:
        return self._stopping

    # -- internals --

    def _enqueue(self, record: BuildRecord) -> None:
        self._waiting += 1
        self._queue.put(_Item(record.id, record.attempt))

    def _transition(self, old: BuildRecord | None, new: BuildRecord, why: str) -> None:
        self.store.put(new)
        self._log(old, new, why)

    def _log(self, old: BuildRecord | None, new: BuildRecord, why: str) -> None:
        LOG.info(
            "build %s: %s -> %s%s",
            new.id[:16],
            old.state if old else "new",
            new.state,
            f" ({why})" if why else "",
        )
        if self._on_change is not None:
            self._on_change(new)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stopping:
                return
            with self._lock:
                self._waiting -= 1
                record = self.store.get(item.id)
                if record is None or record.attempt != item.attempt:
                    continue  # deleted or resubmitted while waiting
                running = replace(record, state=RUNNING, started_at=now())
                if not self.store.update_if_attempt(running):
                    continue
            self._log(record, running, "")
            self._run(running)

    def _run(self, record: BuildRecord) -> None:
        out_dir: Path | None = None
        try:
            assert self._builder is not None
            req = parse_build_request(record.request)
            base = resolve_base(self.images, req)
            out_dir = self.store.work_dir(record)
            built = self._builder(
                req, kernel=base.kernel, initramfs=base.initramfs, out_dir=out_dir
            )
            if self.store.complete(record, {"uki": built.uki, "iso": built.iso}):
                done = self.store.get(record.id)
                self._log(record, done or replace(record, state=COMPLETED), "")
            else:
                LOG.info("build %s: deleted while running; output discarded", record.id[:16])
        except Exception as exc:  # noqa: BLE001 - any failure of one build fails that build
            LOG.warning("build %s failed: %s", record.id[:16], one_line(exc))
            failed = replace(record, state=FAILED, completed_at=now(), error=one_line(exc))
            if self.store.update_if_attempt(failed):
                self._log(record, failed, "")
        finally:
            if out_dir is not None:
                shutil.rmtree(out_dir, ignore_errors=True)


def _new_attempt() -> str:
    return uuid.uuid4().hex
