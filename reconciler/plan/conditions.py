"""Status folding: one place that turns a decision or a step's outcome into conditions. Pure.

Flux's semantics: ``Ready`` always present; ``Reconciling`` and ``Stalled`` only while True.

- working: ``Reconciling=True`` (reason ``Progressing``, or ``ProgressingWithRetry`` after a
  failure), ``Ready=Unknown``;
- converged: ``Ready=True`` (``ReconciliationSucceeded``);
- needs a person: ``Stalled=True`` with the reason (``Protected``, ``MaxDestructive``,
  ``WrongMachine``, ``RetriesExhausted``, ``<Step>Failed``),
  ``Ready=False``;
- left alone: ``Ready=Unknown`` with ``Suspended``, ``Unmanaged`` or ``Orphaned``.
"""

from __future__ import annotations

from reconciler.plan.decide import Action, Hold, Kind
from reconciler.plan.status import READY, RECONCILING, STALLED, Condition, HostStatus


def _set(st: HostStatus, *conditions: Condition) -> HostStatus:
    return st.replace(conditions=tuple(conditions))


def progressing(st: HostStatus, message: str, *, retry: bool = False) -> HostStatus:
    reason = "ProgressingWithRetry" if retry else "Progressing"
    return _set(st, Condition(READY, "Unknown", reason, message),
                Condition(RECONCILING, "True", reason, message))


def ready(st: HostStatus, message: str) -> HostStatus:
    return _set(st, Condition(READY, "True", "ReconciliationSucceeded", message))


def stalled(st: HostStatus, reason: str, message: str) -> HostStatus:
    return _set(st, Condition(READY, "False", reason, message),
                Condition(STALLED, "True", reason, message))


def idle(st: HostStatus, reason: str, message: str) -> HostStatus:
    return _set(st, Condition(READY, "Unknown", reason, message))


def step_reason(step: str) -> str:
    """``write-image`` -> ``WriteImageFailed``."""
    return "".join(part.capitalize() for part in step.split("-")) + "Failed"


def fold_action(st: HostStatus, action: Action) -> HostStatus:
    """The status of a server the executor will not run this pass (held or nothing to do).
    Runnable actions are folded by the executor as their steps run."""
    if action.kind == Kind.FORGET or (action.kind == Kind.NONE and st.orphaned):
        return idle(st.replace(orphaned=True), "Orphaned", action.message)
    if action.kind == Kind.RELEASE:
        return idle(st.replace(workflow=None, step=None, target=None, progress={}),
                    "Unmanaged", action.message)
    hold = action.hold
    if hold is None:
        if action.kind == Kind.NONE:
            if not action.managed:
                return idle(st, "Unmanaged", action.message)
            if st.stalled_target is not None or st.workflow is not None:
                return st
            return ready(st, action.message)
        return st
    if hold in (Hold.PROTECTED, Hold.MAX_DESTRUCTIVE):
        return stalled(st, hold.value, action.message)
    if hold == Hold.SUSPENDED:
        return idle(st, "Suspended", action.message)
    if hold == Hold.BACKOFF:
        return progressing(st, f"{action.message}: {st.last_error}", retry=True)
    return st  # Stalled: the failure that stalled it set the conditions
