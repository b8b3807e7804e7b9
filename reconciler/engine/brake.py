"""The emergency brake: a fleet-wide pause kept outside git (git may be what is wrong).

``reconciler pause`` / ``resume`` and ``POST /api/v1/pause|resume`` write or remove
``<data_dir>/paused.json``; the loop starts no new step while it exists (running steps end at
their current step), and it survives restarts. The file is written to a temporary name and
renamed, so a reader sees the whole record or none.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.adapters.store import write_atomic

PAUSE_FILE = "paused.json"
MAX_REASON = 500


@dataclass(frozen=True, slots=True)
class Pause:
    at: float  # unix time the brake was set
    by: str  # who: "cli:<user>" or "api:<client address>"
    reason: str

    def to_record(self) -> dict[str, Any]:
        return {"at": self.at, "by": self.by, "reason": self.reason}


def pause_file(data_dir: Path) -> Path:
    return data_dir / PAUSE_FILE


def read(data_dir: Path) -> Pause | None:
    """The brake as set, or None. A file that cannot be parsed still means paused: the
    operator meant to stop the fleet, a torn or hand-edited file must not release it."""
    try:
        raw = pause_file(data_dir).read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw[:65536])
        return Pause(float(data["at"]), str(data["by"])[:200], str(data["reason"])[:MAX_REASON])
    except (ValueError, KeyError, TypeError):
        return Pause(0.0, "unknown", f"{pause_file(data_dir)} is unreadable; resume removes it")


def pause(data_dir: Path, by: str, reason: str = "", *, now: float | None = None) -> Pause:
    """Set the brake (again: the record is replaced). Atomic: temporary name, then rename."""
    record = Pause(time.time() if now is None else now, by[:200], reason[:MAX_REASON])
    data_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(pause_file(data_dir), json.dumps(record.to_record()).encode())
    return record


def resume(data_dir: Path) -> bool:
    """Release the brake; False when it was not set."""
    try:
        pause_file(data_dir).unlink()
    except FileNotFoundError:
        return False
    return True


class Brake:
    """The loop's cheap check: one ``stat`` a call."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def __call__(self) -> bool:
        return pause_file(self.data_dir).exists()

    def read(self) -> Pause | None:
        return read(self.data_dir)
