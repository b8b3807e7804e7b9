"""The bounded build queue with a fake builder (same interface as the real pipeline)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler.adapters.store import COMPLETED, FAILED, PENDING, RUNNING, BuildStore
from reconciler.engine.buildqueue import BuildQueue, QueueFull
from reconciler.errors import InputError
from tests.fixtures.service import FakeBuilder

REQUEST = {
    "kernel": "vmlinuz-amd64",
    "initramfs": "initramfs-amd64.img",
    "cmdline": "console=ttyS0",
    "architecture": "amd64",
}


def images(root: Path) -> Path:
    (root / "amd64").mkdir(parents=True)
    (root / "amd64" / "vmlinuz-amd64").write_bytes(b"kernel")
    (root / "amd64" / "initramfs-amd64.img").write_bytes(b"initramfs")
    return root


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


class Harness:
    def __init__(self, tmp_path: Path, *, maxsize: int = 4) -> None:
        self.tmp = tmp_path
        self.builder = FakeBuilder()
        self.old_builders: list[FakeBuilder] = []
        self.maxsize = maxsize
        self.store = BuildStore(tmp_path / "data")
        self.queue = self._queue()

    def _queue(self) -> BuildQueue:
        return BuildQueue(self.store, self.tmp / "images", workers=1, maxsize=self.maxsize,
                          builder=self.builder)  # fmt: skip

    def start(self) -> None:
        self.queue.start(self.store.open())

    def crash_and_restart(self) -> None:
        """A new process on the same data dir while the old worker is still stuck.

        The old worker is released at teardown; its attempt is stale by then, so its output
        is discarded.
        """
        self.old_builders.append(self.builder)
        self.store.close()
        self.store = BuildStore(self.tmp / "data")
        self.builder = FakeBuilder()
        self.queue = self._queue()
        self.start()

    def stop(self) -> None:
        for builder in [self.builder, *self.old_builders]:
            if builder.gate is not None:
                builder.gate.set()
        self.queue.stop(10)
        self.store.close()

    def state(self, build_id: str) -> str | None:
        record = self.store.get(build_id)
        return record.state if record else None


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    images(tmp_path / "images")
    harness = Harness(tmp_path)
    harness.start()
    yield harness
    harness.stop()


def test_builds_and_deduplicates(h: Harness) -> None:
    record, created = h.queue.submit(REQUEST)
    assert created and record.state == PENDING
    wait_until(lambda: h.state(record.id) == COMPLETED)
    again, created = h.queue.submit(dict(reversed(list(REQUEST.items()))))  # same, reordered
    assert not created and again.id == record.id
    assert h.builder.calls == [record.id]
    assert (h.tmp / "data" / "builds" / record.id / "boot.iso").is_file()
    assert list((h.tmp / "data" / "work").iterdir()) == []


def test_failed_build_is_rebuilt_on_resubmission(h: Harness) -> None:
    h.builder.fail = "objcopy failed with exit status 1:\nboom"
    record, _ = h.queue.submit(REQUEST)
    wait_until(lambda: h.state(record.id) == FAILED)
    failed = h.store.get(record.id)
    assert failed is not None and failed.error == "objcopy failed with exit status 1: boom"
    h.builder.fail = None
    again, created = h.queue.submit(REQUEST)
    assert created and again.id == record.id
    wait_until(lambda: h.state(record.id) == COMPLETED)
    done = h.store.get(record.id)
    assert done is not None and done.error is None and len(h.builder.calls) == 2


def test_input_errors_name_the_field(h: Harness) -> None:
    with pytest.raises(InputError, match="^kernel: 'vmlinuz-arm64' is not a base artifact"):
        h.queue.submit(dict(REQUEST, kernel="vmlinuz-arm64"))
    with pytest.raises(InputError, match="^initramfs: 'x' is not a base artifact for"):
        h.queue.submit(dict(REQUEST, initramfs="x"))
    with pytest.raises(InputError, match="^kernel: 'vmlinuz-amd64' is not .* for .* arm64"):
        h.queue.submit(dict(REQUEST, architecture="arm64"))
    with pytest.raises(InputError, match="^architecture:"):
        h.queue.submit(dict(REQUEST, architecture="riscv64"))
    assert h.store.list() == []


def test_full_queue_refuses_and_recovers(h: Harness) -> None:
    h.builder.gate = threading.Event()
    first, _ = h.queue.submit(REQUEST)  # taken by the one worker, held at the gate
    assert h.builder.started.wait(10)
    waiting = [h.queue.submit(dict(REQUEST, cmdline=f"c{n}"))[0] for n in range(h.maxsize)]
    with pytest.raises(QueueFull, match="build queue full"):
        h.queue.submit(dict(REQUEST, cmdline="one too many"))
    # An identical request is still answered while the queue is full.
    assert h.queue.submit(REQUEST)[0].id == first.id
    h.builder.gate.set()
    for record in [first, *waiting]:
        wait_until(lambda r=record: h.state(r.id) == COMPLETED)  # type: ignore[misc]
    h.queue.submit(dict(REQUEST, cmdline="one too many"))


def test_delete_while_running_discards_the_output(h: Harness) -> None:
    h.builder.gate = threading.Event()
    record, _ = h.queue.submit(REQUEST)
    assert h.builder.started.wait(10)
    assert h.state(record.id) == RUNNING
    assert h.queue.delete(record.id)
    h.builder.gate.set()
    wait_until(lambda: list((h.tmp / "data" / "work").iterdir()) == [])
    assert h.store.get(record.id) is None
    assert not (h.tmp / "data" / "builds" / record.id).exists()


def test_interrupted_builds_run_again_after_a_restart(h: Harness) -> None:
    h.builder.gate = threading.Event()
    running, _ = h.queue.submit(REQUEST)
    assert h.builder.started.wait(10)
    pending, _ = h.queue.submit(dict(REQUEST, cmdline="second"))
    # The records on disk still say running / pending when the next process starts.
    h.crash_and_restart()
    wait_until(lambda: h.state(running.id) == COMPLETED and h.state(pending.id) == COMPLETED)
    assert sorted(h.builder.calls) == sorted([running.id, pending.id])


def test_more_interrupted_builds_than_the_queue_holds_fail(tmp_path: Path) -> None:
    images(tmp_path / "images")
    h = Harness(tmp_path, maxsize=1)
    h.store.open()
    ids = []
    for n in range(3):
        record, _ = h.queue.submit(dict(REQUEST, cmdline=f"c{n}")) if n == 0 else (None, None)
        if record is not None:
            ids.append(record.id)
    # Write two more pending records directly, as a previous process with a longer queue would.
    from reconciler.artifacts.request import build_id, normalized, parse_build_request

    for n in (1, 2):
        req = parse_build_request(dict(REQUEST, cmdline=f"c{n}"))
        first = h.store.get(ids[0])
        assert first is not None
        h.store.put(replace(first, id=build_id(req), request=normalized(req)))
        ids.append(build_id(req))
    h.store.close()
    h.store = BuildStore(tmp_path / "data")
    h.queue = h._queue()
    h.start()
    try:
        wait_until(lambda: all(h.state(i) in (COMPLETED, FAILED) for i in ids))
        states = sorted(h.state(i) or "" for i in ids)
        assert states == [COMPLETED, FAILED, FAILED]
        failed = [h.store.get(i) for i in ids if h.state(i) == FAILED]
        assert all(r and r.error and "queue was full" in r.error for r in failed)
    finally:
        h.stop()


def test_stop_leaves_waiting_builds_pending_for_the_next_start(h: Harness) -> None:
    h.builder.gate = threading.Event()
    running, _ = h.queue.submit(REQUEST)
    assert h.builder.started.wait(10)
    waiting, _ = h.queue.submit(dict(REQUEST, cmdline="waiting"))
    result: list[bool] = []
    stopper = threading.Thread(target=lambda: result.append(h.queue.stop(10)))
    stopper.start()
    wait_until(lambda: h.queue.stopping)
    h.builder.gate.set()  # the running build ends only after the stop began
    stopper.join(10)
    assert result == [True]
    assert h.state(running.id) == COMPLETED  # the running build was allowed to finish
    assert h.state(waiting.id) == PENDING  # the waiting one was not started
    assert h.builder.calls == [running.id]
