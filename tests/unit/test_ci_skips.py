"""tests/conftest.py: a skip is a skip on a developer machine and a failure under CI.

Each case runs pytest in a subprocess on a tiny test file, with ``tests.conftest`` loaded as a
plugin and CI set or not, and checks the exit status and the summary.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PEER_MISSING = '''
import pytest

from tests.conftest import skip_or_fail


def test_runs() -> None:
    pass


def test_peer() -> None:
    {body}
'''
HELPER = 'skip_or_fail("frobnicator missing (scripts/setup.sh installs it)")'
PLAIN_SKIP = 'pytest.skip("frobnicator missing")'
SKIPPED_MODULE = '''
import pytest

pytest.importorskip("no_such_module_here")


def test_never() -> None:
    pass
'''


def run_pytest(tmp_path: Path, source: str, ci: str | None) -> tuple[int, str]:
    (tmp_path / "test_case.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # faster; the plugins play no part here
    if ci is not None:
        env["CI"] = ci
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "test_case.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("body", "ci"), [(HELPER, None), (HELPER, "false"), (PLAIN_SKIP, None), (PLAIN_SKIP, "0")]
)
def test_a_skip_is_a_skip_outside_ci(tmp_path: Path, body: str, ci: str | None) -> None:
    code, out = run_pytest(tmp_path, PEER_MISSING.format(body=body), ci)
    assert code == 0, out
    assert "1 passed, 1 skipped" in out
    assert "skipped under CI" not in out


@pytest.mark.parametrize("ci", ["1", "true"])
def test_the_helper_fails_the_test_under_ci(tmp_path: Path, ci: str) -> None:
    code, out = run_pytest(tmp_path, PEER_MISSING.format(body=HELPER), ci)
    assert code == 1, out
    assert "1 failed, 1 passed" in out
    assert "CI must not skip: frobnicator missing (scripts/setup.sh installs it)" in out


def test_any_other_skip_fails_the_session_under_ci(tmp_path: Path) -> None:
    code, out = run_pytest(tmp_path, PEER_MISSING.format(body=PLAIN_SKIP), "1")
    assert code == 1, out
    assert "1 passed, 1 skipped" in out
    assert "skipped under CI" in out
    assert "SKIPPED test_case.py::test_peer: frobnicator missing" in out


def test_a_skipped_module_fails_the_session_under_ci(tmp_path: Path) -> None:
    code, out = run_pytest(tmp_path, SKIPPED_MODULE, "1")
    assert code == 1, out
    assert "SKIPPED test_case.py: could not import 'no_such_module_here'" in out
    code, out = run_pytest(tmp_path, SKIPPED_MODULE, None)
    assert code == pytest.ExitCode.NO_TESTS_COLLECTED, out
