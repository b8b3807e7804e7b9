"""The pure core stays pure: the modules that turn YAML into an inventory, desired hosts,
rendered files, boot artifacts and a plan import no network, subprocess, web or BMC library,
and none of the adapters, engine, web or lab packages (the import contract kopf keeps with
import-linter, checked here on the source with ``ast``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "reconciler"
PURE = ("model", "render", "plan", "machines", "artifacts")
# The one module of those that may run a program: it finds the boot tools and runs them
# through the single subprocess wrapper.
EXEMPT = {"artifacts/toolchain.py"}
FORBIDDEN = (
    "subprocess", "socket", "http.client", "urllib.request", "requests", "flask", "werkzeug",
    "cheroot", "sushy", "asyncssh", "git", "apscheduler",
    "reconciler.adapters", "reconciler.engine", "reconciler.web", "reconciler.lab",
    "reconciler.commands", "reconciler.cli",
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _modules() -> list[Path]:
    return sorted(p for pkg in PURE for p in (PACKAGE / pkg).rglob("*.py")
                  if str(p.relative_to(PACKAGE)) not in EXEMPT)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_module_imports_nothing_with_side_effects(path: Path) -> None:
    bad = sorted(name for name in _imports(path)
                 if any(name == f or name.startswith(f + ".") for f in FORBIDDEN))
    assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {', '.join(bad)}"


def test_the_contract_sees_imports() -> None:
    # the checker itself: a module importing a forbidden name is caught
    assert "subprocess" in _imports(PACKAGE / "adapters" / "run.py")
    assert len(_modules()) >= 10
