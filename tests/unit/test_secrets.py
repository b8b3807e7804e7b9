from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.adapters.secrets import env_name, resolve
from reconciler.errors import InputError, PermanentError
from reconciler.log import redact


def test_env_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILER_CRED_R1_BMC", "admin:s3cr3t-pass")
    creds = resolve("r1-bmc")
    assert (creds.username, creds.password) == ("admin", "s3cr3t-pass")
    assert "s3cr3t-pass" not in repr(creds)
    assert redact("password s3cr3t-pass") == "password ***"


def test_file_reference_yaml_and_plain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(env_name("a"), raising=False)
    (tmp_path / "a").write_text("username: root\npassword: calvin-xyz\n")
    (tmp_path / "b").write_text("ADMIN:ADMIN-pw\n")
    assert resolve("a", directory=tmp_path).username == "root"
    assert resolve("b", directory=tmp_path).password == "ADMIN-pw"


def test_missing_reference_names_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(PermanentError) as info:
        resolve("nope", directory=tmp_path)
    assert "credentials 'nope' not found" in str(info.value)
    assert "RECONCILER_CRED_NOPE" in str(info.value)


def test_bad_reference_and_bad_file(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        resolve("../etc/passwd", directory=tmp_path)
    (tmp_path / "c").write_text("username: x\n")
    with pytest.raises(PermanentError, match="expected 'username:password'"):
        resolve("c", directory=tmp_path)
