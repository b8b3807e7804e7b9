"""Group commit of checkins (CheckinStore): a change returns only once a snapshot holding it
is in place, concurrent changes share writes, and a failed write fails every change it held."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from reconciler.adapters import store as store_module
from reconciler.adapters.store import CheckinStore


def test_concurrent_updates_all_survive_a_reopen(tmp_path: Path) -> None:
    store = CheckinStore(tmp_path)
    store.open()
    ids = [f"node-{n}" for n in range(16)]
    for checkin_id in ids:
        store.register(checkin_id)
    writes = []
    real = store_module.write_atomic

    def counting(path: Path, data: bytes, *, durable: bool = True) -> None:
        writes.append(path)
        real(path, data, durable=durable)

    def loop(checkin_id: str) -> None:
        for n in range(50):
            store.update(checkin_id, (f"10.0.{ids.index(checkin_id)}.{n}",))

    store_module.write_atomic = counting  # type: ignore[assignment]
    try:
        threads = [threading.Thread(target=loop, args=(i,)) for i in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        store_module.write_atomic = real
    again = CheckinStore(tmp_path)
    again.open()
    for checkin_id in ids:
        record = again.get(checkin_id)
        assert record is not None and record.addresses == (f"10.0.{ids.index(checkin_id)}.49",)
    assert 0 < len(writes) <= 16 * 50
    assert len(list(tmp_path.glob(CheckinStore.PATTERN))) == 1


def wait_until(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)  # polling a condition with a deadline


def test_a_failed_write_fails_every_change_it_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckinStore(tmp_path)
    store.open()
    for checkin_id in ("a", "b", "c", "d"):
        store.register(checkin_id)
    first_started, release_first = threading.Event(), threading.Event()
    calls = []
    real = store_module.write_atomic

    def failing_second(path: Path, data: bytes, *, durable: bool = True) -> None:
        calls.append(path)
        if len(calls) == 1:
            first_started.set()
            release_first.wait(10)
            real(path, data, durable=durable)
        else:
            raise OSError("disk full")

    monkeypatch.setattr(store_module, "write_atomic", failing_second)
    outcome: dict[str, str] = {}

    def update(checkin_id: str) -> None:
        try:
            store.update(checkin_id, ("10.0.0.1",))
            outcome[checkin_id] = "ok"
        except OSError as exc:
            outcome[checkin_id] = str(exc)

    first = threading.Thread(target=update, args=("a",))
    first.start()
    assert first_started.wait(10)
    riders = [threading.Thread(target=update, args=(i,)) for i in ("b", "c", "d")]
    for t in riders:
        t.start()
    # Each change is applied in memory in the same lock hold that joins it to a batch.
    wait_until(lambda: all(store.get(i).addresses == ("10.0.0.1",) for i in "bcd"))  # type: ignore[union-attr]
    release_first.set()
    for t in [first, *riders]:
        t.join(10)
    assert outcome["a"] == "ok"
    assert all("disk full" in outcome[i] for i in "bcd"), outcome
    assert len(calls) == 2  # b, c and d shared the second write
