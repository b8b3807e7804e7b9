"""The state database: transitions committed before the step, interrupted steps closed at the
next start, the writer's cache equal to what is on disk, settings errors naming their source."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from reconciler.adapters.statedb import StateDB
from reconciler.engine.config import load_run_settings
from reconciler.errors import InputError
from reconciler.plan.status import Condition, HostStatus


def test_begin_step_commits_the_status_and_opens_the_row_together(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "state.db")
    st = HostStatus("n1", workflow="provision", step="write-image", target="t",
                    progress={"disk": "/dev/vda"},
                    conditions=(Condition("Ready", "Unknown", "Progressing", "writing"),))
    run_id = db.begin_step(st, 100.0)
    # What another process (kill -9 right now) would find on disk:
    other = StateDB(tmp_path / "state.db")
    assert other.host("n1") == st
    (row,) = other.history("n1")
    assert (row.step, row.ended, row.result) == ("write-image", None, None)
    other.close()
    db.close()
    # The next start closes the open row as interrupted.
    again = StateDB(tmp_path / "state.db")
    assert again.close_interrupted(200.0) == 1
    (row,) = again.history("n1")
    assert (row.result, row.ended) == ("interrupted", 200.0)
    assert run_id == row.id
    again.close()


def test_the_writers_cache_follows_commits_not_rollbacks(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "state.db")
    db.put(HostStatus("n1", desired_state="off"))
    assert db.hosts()["n1"].desired_state == "off"
    with pytest.raises(RuntimeError), db._tx() as conn:
        db._put(conn, HostStatus("n1", desired_state="provisioned"))
        raise RuntimeError("boom")
    assert db.hosts()["n1"].desired_state == "off"
    db.put_many({"n2": HostStatus("n2"), "n1": HostStatus("n1", desired_state="unmanaged")})
    fresh = StateDB(tmp_path / "state.db")
    assert fresh.hosts() == db.hosts()
    db.delete("n2")
    assert "n2" not in db.hosts()
    fresh.close()
    db.close()


def test_the_file_is_private_and_a_broken_one_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateDB(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(Exception) as info:
        StateDB(bad)
    assert str(bad) in str(info.value)
    assert not isinstance(info.value, sqlite3.DatabaseError)


def test_history_is_bounded_per_host(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "state.db")
    st = HostStatus("n1", workflow="power-off", step="power-off")
    other = HostStatus("n2", workflow="power-off", step="power-off")
    db.end_step(db.begin_step(other, 0.0), other, 0.5, "ok")
    for i in range(250):
        run_id = db.begin_step(st, float(i))
        db.end_step(run_id, st, float(i) + 0.5, "ok")
    rows = db.history("n1", limit=1000)
    assert len(rows) == 200 and rows[-1].started == 249.0
    assert len(db.history("n2")) == 1  # one host's steps never push out another's
    db.close()


def test_run_settings_errors_name_their_source(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="run.yaml: poll_interval"):
        load_run_settings({"repo": "x", "poll_interval": "often"}, "run.yaml", env={})
    with pytest.raises(InputError, match="run.yaml: service.listen"):
        load_run_settings({"repo": "x", "service": {"listen": "nowhere"}}, "run.yaml", env={})
    with pytest.raises(InputError, match="run.yaml: colour: unknown setting"):
        load_run_settings({"repo": "x", "colour": "blue"}, "run.yaml", env={})
    with pytest.raises(InputError, match="RECONCILER_MAX_ATTEMPTS"):
        load_run_settings({"repo": "x"}, "run.yaml", env={"RECONCILER_MAX_ATTEMPTS": "0"})
    with pytest.raises(InputError, match="--repo"):
        load_run_settings({}, "run.yaml", env={})
    with pytest.raises(InputError, match="--path"):
        load_run_settings({"repo": "x"}, "run.yaml", env={}, flags={"path": "../etc"})
    settings = load_run_settings({"repo": "x", "data_dir": str(tmp_path)}, "run.yaml", env={},
                                 flags={"branch": "prod", "poll_interval": "15"})
    assert (settings.branch, settings.poll_interval) == ("prod", 15.0)
    assert settings.service.data_dir == tmp_path / "service"
    assert settings.state_db == tmp_path / "state.db"
