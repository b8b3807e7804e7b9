"""The foundation: the subprocess wrapper, errors, redaction, the CLI shell."""

from __future__ import annotations

import logging

import pytest

from reconciler import cli
from reconciler.adapters.run import run, which
from reconciler.errors import InputError, ToolFailed, ToolMissing
from reconciler.log import RedactingFilter, redact, register_secret


def test_which_names_the_package_to_install() -> None:
    with pytest.raises(ToolMissing) as info:
        which("xorriso-that-does-not-exist")
    assert "xorriso-that-does-not-exist not found" in str(info.value)


def test_missing_tool_hint_names_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolMissing) as info:
        which("objcopy")
    assert str(info.value) == "objcopy not found (hint: install binutils)"


def test_run_failure_carries_exit_status_and_stderr_tail() -> None:
    with pytest.raises(ToolFailed) as info:
        run(["sh", "-c", "echo boom >&2; exit 3"], timeout=10)
    message = str(info.value)
    assert "exit status 3" in message and message.endswith(": boom")


def test_run_times_out() -> None:
    with pytest.raises(ToolFailed, match="timed out after 0.2 s"):
        run(["sleep", "5"], timeout=0.2)


def test_run_has_no_stdin_and_explicit_env() -> None:
    proc = run(["sh", "-c", "cat; echo \"$HOME|$FOO\""], timeout=10, env={"FOO": "bar"})
    assert proc.stdout == b"|bar\n"


def test_registered_secret_is_redacted_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    register_secret("hunter2-very-secret")
    logger = logging.getLogger("test.redact")
    caplog.handler.addFilter(RedactingFilter())
    logger.warning("login with %s failed", "hunter2-very-secret")
    assert "hunter2" not in caplog.text
    assert "login with *** failed" in caplog.text


def test_url_credentials_and_private_keys_are_redacted() -> None:
    assert redact("https://admin:pw@bmc.example/redfish") == "https://***@bmc.example/redfish"
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----"
    assert redact(f"key: {key}") == "key: ***"


def test_input_error_exit_code_and_hint() -> None:
    err = InputError("files[3].mode: '0abc' is not an octal mode")
    assert err.exit_code == 2
    assert str(err) == "files[3].mode: '0abc' is not an octal mode"


def test_cli_without_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: reconciler" in capsys.readouterr().err
