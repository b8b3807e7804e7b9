"""The checkin journal (CheckinStore): a change returns only once its line is in the journal,
concurrent changes all survive a reopen, a failed write undoes the change, a line cut short
by a crash is skipped, and the journal is compacted once it outgrows its live records."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from reconciler.adapters.store import CheckinStore


def reopened(root: Path) -> CheckinStore:
    again = CheckinStore(root)
    again.open()
    return again


def test_concurrent_updates_all_survive_a_reopen(tmp_path: Path) -> None:
    store = CheckinStore(tmp_path)
    store.open()
    ids = [f"node-{n}" for n in range(16)]
    for checkin_id in ids:
        store.register(checkin_id)

    def loop(checkin_id: str) -> None:
        for n in range(50):
            store.update(checkin_id, (f"10.0.{ids.index(checkin_id)}.{n}",))

    threads = [threading.Thread(target=loop, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # Every line is whole: 16 registrations and 800 updates, none interleaved with another.
    lines = store.path.read_text().splitlines()
    assert len(lines) == 16 + 16 * 50
    assert all(json.loads(line)["id"] in ids for line in lines)
    again = reopened(tmp_path)  # no close() of the first: nothing was left to flush
    for checkin_id in ids:
        record = again.get(checkin_id)
        assert record is not None and record.addresses == (f"10.0.{ids.index(checkin_id)}.49",)
    assert len(list(tmp_path.glob(CheckinStore.PATTERN))) == 1
    assert len(again.path.read_text().splitlines()) == 16  # compacted at open
    again.close()
    store.close()


def test_a_failed_write_undoes_the_change(tmp_path: Path) -> None:
    store = CheckinStore(tmp_path)
    store.open()
    store.register("a", ("10.0.0.1",))
    # The journal's descriptor now refuses writes (EBADF), as a dead disk would.
    read_only = os.open(store.path, os.O_RDONLY)
    os.dup2(read_only, store._fd)
    os.close(read_only)
    with pytest.raises(OSError, match="writing the journal failed"):
        store.update("a", ("10.0.0.2",))
    with pytest.raises(OSError, match="writing the journal failed"):
        store.register("b")
    with pytest.raises(OSError, match="writing the journal failed"):
        store.delete("a")
    record = store.get("a")
    assert record is not None and record.addresses == ("10.0.0.1",)
    assert store.get("b") is None
    store.close()
    again = reopened(tmp_path)
    assert [(c.id, c.addresses) for c in again] == [("a", ("10.0.0.1",))]
    again.close()


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path: Path) -> None:
    store = CheckinStore(tmp_path)
    store.open()
    store.register("a", ("10.0.0.1",))
    store.register("b")
    path = store.path
    store.close()
    with open(path, "ab") as journal:  # a write the kernel cut short when the process died
        journal.write(b'{"id": "b", "addresses": ["10.0.0.9"], "times')
    again = reopened(tmp_path)
    assert again.get("b") is not None and again.get("b").addresses == ()  # type: ignore[union-attr]
    again.update("a", ("10.0.0.3",))
    again.close()
    third = reopened(tmp_path)
    assert {c.id: c.addresses for c in third} == {"a": ("10.0.0.3",), "b": ()}
    third.close()


def test_the_journal_is_compacted_once_it_outgrows_its_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CheckinStore, "COMPACT_MIN", 10)
    store = CheckinStore(tmp_path)
    store.open()
    store.register("a")
    store.register("b")
    first = store.path
    for n in range(20):
        store.update("a", (f"10.0.0.{n}",))
    assert not first.exists() and store.path != first
    assert len(list(tmp_path.glob(CheckinStore.PATTERN))) == 1
    assert len(store.path.read_text().splitlines()) <= 10
    assert store.delete("b")
    store.close()
    again = reopened(tmp_path)
    assert {c.id: c.addresses for c in again} == {"a": ("10.0.0.19",)}
    again.close()
