"""Where the project's own data lives: schemas/, templates/, images/, inventory-example/.

The reconciler runs from its git checkout (``pip install -e .``); ``RECONCILER_HOME``
points elsewhere when the data directories were installed apart from the code.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    home = os.environ.get("RECONCILER_HOME")
    if home:
        return Path(home)
    return Path(__file__).resolve().parent.parent


def schemas_dir() -> Path:
    return project_root() / "schemas"


def templates_dir() -> Path:
    return project_root() / "templates"


def images_dir() -> Path:
    return project_root() / "images"


def example_inventory() -> Path:
    return project_root() / "inventory-example"
