"""``reconciler.yaml``: the inventory's policy, reviewed like every other file in it.

    # yaml-language-server: $schema=../schemas/inventory/policy.schema.json
    max_destructive: 3      # a revision that would wipe more servers holds all its wipes
    power_drift: restore    # a provisioned server found off: restore (power on) or report

The file is optional; without it the defaults apply. It is parsed with the inventory's own
reader and schema check, so a broken policy is a problem naming the file and field, and the
loop then keeps the last good policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

POLICY_FILE = "reconciler.yaml"
POWER_DRIFT = ("restore", "report")


@dataclass(frozen=True, slots=True)
class Policy:
    max_destructive: int = 3
    power_drift: str = "restore"

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Policy:
        """From schema-checked data (None: the file is absent)."""
        if not data:
            return cls()
        return cls(int(data.get("max_destructive", 3)), str(data.get("power_drift", "restore")))

    def to_record(self) -> dict[str, Any]:
        return {"max_destructive": self.max_destructive, "power_drift": self.power_drift}
