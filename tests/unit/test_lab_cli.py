"""``reconciler lab``: bad input is one line naming the flag, before any side effect."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.commands.lab import LAB_EXTRA_MODULES


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["up", "--hosts", "0"], "--hosts"),
        (["up", "--hosts", "300"], "--hosts"),
        (["up", "--arch", "riscv64"], "--arch"),
        (["up", "--accel", "whpx"], "--accel"),
        (["up", "--images", "/nonexistent/images"], "--images"),
        (["up", "--images", "/"], "no amd64/ directory"),
        (["boot"], "no lab at"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    assert main(["lab", "--state-dir", str(tmp_path / "lab"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert needle in err
    # Nothing was created.
    assert not (tmp_path / "lab").exists()


def test_status_without_a_lab_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "--state-dir", str(tmp_path), "status"]) == 3
    assert "no lab at" in capsys.readouterr().out


@pytest.mark.parametrize("module", LAB_EXTRA_MODULES)
def test_a_missing_lab_extra_is_one_line_naming_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    module: str,
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what a plain `pip install reconciler` has
    # --hosts 0 as well: the extra is checked first, and nothing starts if it were not.
    assert main(["lab", "--state-dir", str(tmp_path / "lab"), "up", "--hosts", "0"]) == 2
    assert capsys.readouterr().err == (
        "reconciler: error: the lab needs the 'lab' extra: pip install 'reconciler[lab]' "
        f"(missing module: {module})\n"
    )
    assert not (tmp_path / "lab").exists()
