"""The build service's disk state: records round-trip, atomic files, leftovers cleared."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler.adapters.store import (
    COMPLETED,
    PENDING,
    RUNNING,
    BuildRecord,
    BuildStore,
    CheckinStore,
    DataDirLocked,
    now,
    write_atomic,
)

ID = "a" * 64


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BuildStore]:
    opened = BuildStore(tmp_path)
    opened.open()
    yield opened
    opened.close()


def test_build_record_round_trip() -> None:
    record = BuildRecord(id=ID, state=COMPLETED, request={"tlsArtifacts": True}, created_at=now(),
                         started_at=now(), completed_at=now(), error=None)  # fmt: skip
    again = BuildRecord.from_record(json.loads(json.dumps(record.to_record())))
    # Times are kept to the millisecond.
    assert again.to_record() == record.to_record()
    assert again.tls_artifacts


def test_write_atomic_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_only_completed_builds_serve_artifacts(tmp_path: Path, store: BuildStore) -> None:
    record = BuildRecord(id=ID, state=RUNNING, request={}, created_at=now())
    store.put(record)
    work = store.work_dir(record)
    (work / "uki.efi").write_bytes(b"u")
    (work / "boot.iso").write_bytes(b"i")
    assert store.artifact_path(ID, "uki.efi") is None
    assert store.complete(record, {"uki": work / "uki.efi", "iso": work / "boot.iso"})
    assert store.artifact_path(ID, "uki.efi") == tmp_path / "builds" / ID / "uki.efi"
    for odd in ("build.json", "..", "../" + ID, "uki.efi\0", "UKI.EFI", ""):
        assert store.artifact_path(ID, odd) is None
    assert store.get(ID) is not None and store.get(ID).state == COMPLETED  # type: ignore[union-attr]


def test_complete_refuses_a_replaced_attempt(tmp_path: Path, store: BuildStore) -> None:
    record = BuildRecord(id=ID, state=RUNNING, request={}, created_at=now())
    store.put(record)
    store.put(replace(record, attempt="other", state=PENDING))
    work = store.work_dir(record)
    (work / "uki.efi").write_bytes(b"u")
    assert not store.complete(record, {"uki": work / "uki.efi"})
    assert not (tmp_path / "builds" / ID / "uki.efi").exists()


def test_open_clears_leftovers_and_half_made_artifacts(tmp_path: Path) -> None:
    store = BuildStore(tmp_path)
    store.open()
    running = BuildRecord(id=ID, state=RUNNING, request={}, created_at=now())
    store.put(running)
    build_dir = tmp_path / "builds" / ID
    (build_dir / "boot.iso").write_bytes(b"half")  # must never be served
    (build_dir / ".build.json.x.tmp").write_bytes(b"{")
    (store.work_dir(running) / "uki.efi").write_bytes(b"half")
    (tmp_path / "builds" / ("b" * 64)).mkdir()  # no record: unreadable, removed
    store.close()

    again = BuildStore(tmp_path)
    records = again.open()
    assert [r.id for r in records] == [ID] and records[0].state == RUNNING
    assert sorted(p.name for p in build_dir.iterdir()) == ["build.json"]
    assert list((tmp_path / "work").iterdir()) == []
    assert not (tmp_path / "builds" / ("b" * 64)).exists()
    again.close()


def test_one_process_per_data_dir(tmp_path: Path) -> None:
    first = BuildStore(tmp_path)
    first.open()
    with pytest.raises(DataDirLocked, match="in use by another reconciler serve"):
        BuildStore(tmp_path).open()
    first.close()
    second = BuildStore(tmp_path)
    second.open()
    second.close()


def test_delete_and_purge(tmp_path: Path, store: BuildStore) -> None:
    for n in range(3):
        store.put(BuildRecord(id=str(n) * 64, state=PENDING, request={}, created_at=now()))
    assert store.delete("0" * 64) and not store.delete("0" * 64)
    assert store.purge() == 2
    assert store.list() == [] and list((tmp_path / "builds").iterdir()) == []


def test_checkins_survive_a_restart(tmp_path: Path) -> None:
    store = CheckinStore(tmp_path)
    store.open()
    store.register("uuid-1")
    assert store.update("never-registered", ("10.0.0.1",)) is None
    assert store.update("uuid-1", ("10.0.0.1", "fe80::1")) is not None
    store.register("odd/../id\u00e9\n")
    store.register("gone")
    assert store.delete("gone") and not store.delete("gone")
    # No close(): every call above returned only once its change was on disk.
    again = CheckinStore(tmp_path)
    again.open()
    try:
        record = again.get("uuid-1")
        assert record is not None and record.addresses == ("10.0.0.1", "fe80::1")
        assert again.get("odd/../id\u00e9\n") is not None and again.get("gone") is None
        assert [p.name for p in tmp_path.iterdir()] == [again.path.name]  # one snapshot
        assert again.purge() == 2
        assert again.path.read_text() == ""
    finally:
        again.close()
        store.close()


def test_concurrent_checkin_updates_all_survive(tmp_path: Path) -> None:
    import threading

    store = CheckinStore(tmp_path)
    store.open()
    try:
        ids = [f"node-{n}" for n in range(32)]
        for checkin_id in ids:
            store.register(checkin_id)

        def put(checkin_id: str) -> None:
            for i in range(20):
                assert store.update(checkin_id, (f"10.0.{i}.1",)) is not None

        threads = [threading.Thread(target=put, args=(i,)) for i in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        again = CheckinStore(tmp_path)
        again.open()
        assert all(again.get(i).addresses == ("10.0.19.1",) for i in ids)  # type: ignore[union-attr]
        again.close()
    finally:
        store.close()


def test_unreadable_checkin_lines_are_skipped(tmp_path: Path) -> None:
    line = '{{"id": "{}", "addresses": [], "timestamp": "2026-01-01T00:00:00Z"}}\n'
    (tmp_path / "checkins-0000000000000003.jsonl").write_text(line.format("old"))
    # The newest generation wins; an older one left by a crash before its unlink goes.
    (tmp_path / "checkins-000000000000000a.jsonl").write_text(line.format("a") + "not json\n")
    store = CheckinStore(tmp_path)
    store.open()
    try:
        assert store.get("a") is not None and len(list(store)) == 1
        # Opening compacts into the next generation; changes append to it.
        assert [p.name for p in tmp_path.iterdir()] == ["checkins-000000000000000b.jsonl"]
        store.register("b")
        assert [p.name for p in tmp_path.iterdir()] == ["checkins-000000000000000b.jsonl"]
        assert len(store.path.read_text().splitlines()) == 2
    finally:
        store.close()
