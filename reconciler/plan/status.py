"""What the engine knows about each server between passes: plain data, persisted as JSON
records by :mod:`reconciler.adapters.statedb` (``to_record``/``from_record``, round-trip tested).

Conditions follow Flux (``fluxcd/pkg:apis/meta/conditions.go``): ``Ready`` is always present;
``Reconciling`` and ``Stalled`` are "abnormal-true", present only while True. Each has a
CamelCase reason and a human message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

READY, RECONCILING, STALLED = "Ready", "Reconciling", "Stalled"


class Power(StrEnum):
    ON = "On"
    OFF = "Off"
    UNKNOWN = "Unknown"


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""

    def to_record(self) -> dict[str, str]:
        return {"type": self.type, "status": self.status, "reason": self.reason,
                "message": self.message}


@dataclass(frozen=True, slots=True)
class Observed:
    """What the BMC said this pass (``reconciler plan``: as last applied)."""

    power: Power = Power.UNKNOWN
    error: str | None = None  # the BMC could not be asked


@dataclass(frozen=True, slots=True)
class HostStatus:
    name: str
    desired_state: str | None = None
    # The workflow in progress, the step it is in (committed before the step starts), when that
    # step started, and the target key it drives to (state + digest, see decide.target_key).
    workflow: str | None = None
    step: str | None = None
    step_started: float | None = None
    target: str | None = None
    progress: Mapping[str, Any] = field(default_factory=dict)
    # What was last reached: state and the provision digest on the disk.
    applied_state: str | None = None
    applied_provision: str | None = None
    applied_target: str | None = None
    last_applied_revision: str | None = None
    last_attempted_revision: str | None = None
    # Failures of the attempts at ``attempt_target``: the retry budget and backoff.
    attempt_target: str | None = None
    attempts: int = 0
    next_retry: float | None = None
    stalled_target: str | None = None  # permanent failure or budget spent, for this target
    last_error: str | None = None
    conditions: tuple[Condition, ...] = ()
    orphaned: bool = False
    orphaned_at: float | None = None  # pruned from the state after orphan_retention
    invalid: str | None = None  # head's problem for this server (it keeps its last good state)
    observe_error: str | None = None  # the BMC did not answer this pass's power query
    inspection: Mapping[str, Any] | None = None  # the last in-band hardware report

    def condition(self, type_: str) -> Condition | None:
        for c in self.conditions:
            if c.type == type_:
                return c
        return None

    def replace(self, **changes: Any) -> HostStatus:
        return dataclasses.replace(self, **changes)

    def to_record(self) -> dict[str, Any]:
        rec = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        rec["progress"] = dict(self.progress)
        rec["inspection"] = dict(self.inspection) if self.inspection is not None else None
        rec["conditions"] = [c.to_record() for c in self.conditions]
        return rec

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> HostStatus:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in rec.items() if k in known}
        values["progress"] = dict(values.get("progress") or {})
        values["conditions"] = tuple(Condition(**c) for c in values.get("conditions") or ())
        return cls(**values)
