"""No silent skips under CI.

CI (``.ci/run``, which exports ``CI=1``) installs every real peer the tests use, so a test
skipped there hides a broken setup instead of proving anything. Every test that cannot run on
a developer machine calls :func:`skip_or_fail`: a skip locally, a failure under CI. As a net
for whatever still skips (a ``skipif`` marker, a direct ``pytest.skip``), the session itself
fails under CI when any test or module was skipped, and the summary lists them.

    from tests.conftest import skip_or_fail

    if shutil.which("xorriso") is None:
        skip_or_fail("xorriso not installed (scripts/setup.sh installs it)")
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

# Values of CI that mean "not CI"; anything else ("1", "true", "yes") means CI.
NOT_CI = ("", "0", "false", "no", "off")


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in NOT_CI


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the current test on a developer machine; under CI, fail it with ``reason``."""
    if under_ci():
        pytest.fail(f"CI must not skip: {reason}", pytrace=False)
    pytest.skip(reason)


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # (file, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


class SkipLedger:
    """Every test and module skipped in this session; fails the session under CI."""

    def __init__(self) -> None:
        self.skipped: list[tuple[str, str]] = []  # (node id, reason)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skipped.append((report.nodeid, _reason(report)))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.skipped:
            self.skipped.append((report.nodeid, _reason(report)))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        passed = (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
        if self.skipped and under_ci() and session.exitstatus in passed:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not (self.skipped and under_ci()):
            return
        terminalreporter.section("skipped under CI", sep="=", red=True, bold=True)
        for nodeid, reason in self.skipped:
            terminalreporter.line(f"SKIPPED {nodeid}: {reason}")
        terminalreporter.line(
            f"CI={os.environ['CI']}: {len(self.skipped)} skipped, so the session fails: CI "
            "installs every peer, a skip here means a broken setup (tests/conftest.py)",
            red=True,
        )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkipLedger(), "skip-ledger")
