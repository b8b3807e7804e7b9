"""Validation problems: one line each, naming the file, the line and the YAML path.

``servers/r1-n01.yaml:7: bmc.address: 'x' is not a valid host``
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One thing wrong with the inventory. ``path`` is dotted (``interfaces[0].mac``)."""

    file: str
    line: int | None
    path: str
    message: str
    column: int | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"

    def to_record(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
        }


Path_ = Sequence[str | int]


def dotted(path: Iterable[str | int]) -> str:
    """``("interfaces", 0, "mac")`` -> ``interfaces[0].mac``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Stable report order: by file, then line (unknown lines last), then path."""
    return sorted(
        set(problems),
        key=lambda p: (p.file, p.line if p.line is not None else 1 << 30, p.column or 0, p.path,
                       p.message),
    )
