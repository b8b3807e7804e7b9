"""The CLI shell: a command's module is imported only when that command runs.

Checked on imports (``sys.modules`` of a fresh interpreter), not on time; bench/cli_startup.py
measures the time.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from typing import Any

import pytest

from reconciler import cli

# What start-up must not pay for: the web, BMC, SSH, git, scheduler and schema stacks.
HEAVY = ("flask", "werkzeug", "sushy", "git", "jsonschema", "jsonschema_rs", "asyncssh",
         "apscheduler", "cheroot", "requests", "jinja2", "yaml")  # fmt: skip


def imported_by(*argv: str) -> set[str]:
    """Top-level modules and reconciler modules a fresh ``reconciler ARGV`` has imported."""
    probe = (
        "import json, sys\n"
        "from reconciler.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=60,
        check=True,
    )  # fmt: skip
    names = json.loads(proc.stderr.strip().splitlines()[-1])
    return {n for n in names if "." not in n or n.startswith("reconciler.")}


@pytest.mark.parametrize("argv", [["--version"], ["--help"], []])
def test_version_and_help_import_no_command_module(argv: list[str]) -> None:
    modules = imported_by(*argv)
    assert modules.isdisjoint(HEAVY), sorted(modules & set(HEAVY))
    assert not any(m.startswith("reconciler.commands.") for m in modules)


def test_build_imports_only_its_own_module() -> None:
    modules = imported_by("build", "--help")
    assert modules.isdisjoint(HEAVY), sorted(modules & set(HEAVY))
    assert {m for m in modules if m.startswith("reconciler.commands.")} == {
        "reconciler.commands.build"
    }


class Recorder:
    """A subparsers action that remembers the help line of each parser added to it."""

    def __init__(self) -> None:
        self.real = argparse.ArgumentParser().add_subparsers()
        self.helps: dict[str, str | None] = {}

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        self.helps[name] = kwargs.get("help")
        return self.real.add_parser(name, **kwargs)


@pytest.mark.parametrize("module", sorted({m for m, _ in cli.COMMANDS.values()}))
def test_each_module_registers_exactly_its_table_lines(module: str) -> None:
    recorder = Recorder()
    importlib.import_module(module).register(recorder)
    table = {name: text for name, (m, text) in cli.COMMANDS.items() if m == module}
    assert recorder.helps == table


def test_command_help_is_the_full_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["build", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: reconciler build [-h] --arch ARCH")
    assert "--dir-override PATH[:MODE]" in out and "Write uki.efi and boot.iso" in out


def test_top_level_help_lists_every_command_in_table_order(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    positions = [out.index(f"\n    {name} ") for name in cli.COMMANDS]
    assert positions == sorted(positions)


def test_unknown_command_lists_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["bogus"])
    assert info.value.code == 2
    choices = ", ".join(repr(name) for name in cli.COMMANDS)
    assert f"invalid choice: 'bogus' (choose from {choices})" in capsys.readouterr().err


def test_a_command_module_that_fails_to_import_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(cli.COMMANDS, "ghost", ("reconciler.commands.ghost", "not written"))
    with pytest.raises(ModuleNotFoundError, match="reconciler.commands.ghost"):
        cli.main(["ghost"])
    # Other commands do not import it.
    with pytest.raises(SystemExit):
        cli.main(["--version"])
