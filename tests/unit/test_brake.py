"""The emergency brake's surfaces: ``reconciler pause`` / ``resume`` and POST /api/v1/pause|resume
(trusted networks only), all over the one pause file the loop reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler import cli
from reconciler.engine import brake
from tests.fixtures.fleet_app import UNTRUSTED, fleet_app
from tests.unit.test_cli import HEAVY, imported_by

# --- the command line -------------------------------------------------------------------------


def test_pause_and_resume_from_the_command_line(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "state.db").touch()
    assert cli.main(["pause", "--data-dir", str(tmp_path), "--reason", "bad firmware"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("paused since ") and ": bad firmware" in out
    assert "until `reconciler resume`" in out
    record = brake.read(tmp_path)
    assert record is not None and record.reason == "bad firmware"
    assert record.by.startswith("cli:") and record.by != "cli:"
    assert brake.Brake(tmp_path)()
    assert cli.main(["resume", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("resumed (was paused since ") and "bad firmware" in out
    assert brake.read(tmp_path) is None and not brake.Brake(tmp_path)()
    assert cli.main(["resume", "--data-dir", str(tmp_path)]) == 0
    assert "not paused" in capsys.readouterr().out


def test_pause_before_the_loop_ever_ran_says_so(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["pause", "--data-dir", str(tmp_path)]) == 0
    assert "no reconcile loop has run in" in capsys.readouterr().err
    assert brake.Brake(tmp_path)()


@pytest.mark.parametrize(("argv", "message"), [
    (["pause", "--data-dir", "{missing}"], "--data-dir: {missing} is not a directory"),
    (["resume", "--data-dir", "{missing}"], "--data-dir: {missing} is not a directory"),
    (["pause", "--data-dir", "{tmp}", "--reason", "x" * 501], "--reason: longer than 500"),
])  # fmt: skip
def test_bad_input_is_an_error_naming_the_flag(tmp_path: Path, argv: list[str], message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    names = {"missing": str(tmp_path / "typo"), "tmp": str(tmp_path)}
    assert cli.main([a.format(**names) for a in argv]) == 2
    assert message.format(**names) in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()  # a typo creates nothing
    assert brake.read(tmp_path) is None


def test_pause_imports_nothing_heavy() -> None:
    modules = imported_by("pause", "--help")
    assert modules.isdisjoint(HEAVY), sorted(modules & set(HEAVY))


# --- the API ----------------------------------------------------------------------------------


def test_pause_and_resume_over_http(tmp_path: Path) -> None:
    with fleet_app(tmp_path) as api:
        response = api.call("POST", "/api/v1/pause", json={"reason": "storage outage"})
        assert response.status_code == 200
        body = response.json
        assert body["paused"] is True and body["by"] == "api:127.0.0.1"
        assert body["reason"] == "storage outage"
        record = brake.read(api.data_dir)
        assert record is not None and record.to_record() == {
            k: body[k] for k in ("at", "by", "reason")}
        scrape = api.call("GET", "/metrics").get_data(as_text=True)
        assert "\nreconciler_paused 1.0\n" in scrape
        assert api.wakes == []
        response = api.call("POST", "/api/v1/resume")
        assert response.status_code == 200
        assert response.json == {"paused": False, "released": record.to_record()}
        assert brake.read(api.data_dir) is None
        assert api.wakes == [1]  # steps start at once, not at the next poll
        again = api.call("POST", "/api/v1/resume")
        assert again.json == {"paused": False} and api.wakes == [1]


def test_pause_without_a_body_and_the_brake_survives_a_restart(tmp_path: Path) -> None:
    with fleet_app(tmp_path / "one") as api:
        assert api.call("POST", "/api/v1/pause").json["reason"] == ""
        data_dir = api.data_dir
    # A new process (a new app over the same data directory) still sees it.
    assert json.loads((data_dir / brake.PAUSE_FILE).read_text())["by"] == "api:127.0.0.1"
    assert brake.Brake(data_dir)()


@pytest.mark.parametrize(("body", "message"), [
    (b"[]", "request body: expected an object, got list"),
    (b'{"reason": 5}', "reason: expected a string, got int"),
    (json.dumps({"reason": "x" * 501}).encode(), "reason: longer than 500 characters"),
    (b"{oops", "request body: not valid JSON"),
])  # fmt: skip
def test_a_bad_pause_body_is_400_and_sets_nothing(tmp_path: Path, body: bytes,
                                                  message: str) -> None:
    with fleet_app(tmp_path) as api:
        response = api.call("POST", "/api/v1/pause", data=body,
                            headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and message in response.json["message"]
        assert brake.read(api.data_dir) is None


def test_only_trusted_networks_may_pull_or_release_the_brake(tmp_path: Path) -> None:
    with fleet_app(tmp_path) as api:
        for path in ("/api/v1/pause", "/api/v1/resume"):
            response = api.call("POST", path, client=UNTRUSTED, json={"reason": "x"})
            assert response.status_code == 403
        assert brake.read(api.data_dir) is None
        brake.pause(api.data_dir, "cli:ops", "held")
        assert api.call("POST", "/api/v1/resume", client=UNTRUSTED).status_code == 403
        assert brake.read(api.data_dir) is not None and api.wakes == []


def test_without_a_loop_the_brake_routes_are_404(tmp_path: Path) -> None:
    with fleet_app(tmp_path, fleet=False) as api:
        for path in ("/api/v1/pause", "/api/v1/resume"):
            assert api.call("POST", path).status_code == 404
        assert not (api.data_dir / brake.PAUSE_FILE).exists()
