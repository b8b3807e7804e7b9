"""The decision: ``plan(desired, observed, status, policy, now) -> list[Action]``. Pure.

``reconciler run`` calls it every pass with what the BMCs said and the state database holds;
``reconciler plan`` (the pull-request preview) calls it with "observed = as last applied" (the
base revision's hosts as converged, see :func:`as_applied`), so the comment says what ``run``
will do. No I/O, no clock: ``now`` is an argument.

Per server, in order:

1. Not in git any more: ``forget`` (status "orphaned"); never a BMC call.
2. ``unmanaged``: nothing (a workflow in progress is abandoned: ``release``).
3. ``suspend: true``: held, reason ``Suspended``.
4. A workflow in progress towards the same target: ``continue`` from its step's resume point.
5. Converged: nothing, or the power workflow when the BMC reports the other power state
   (policy ``power_drift: restore``; ``report`` only says so).
6. Stalled on this very target (permanent error or retry budget spent): held until the desired
   state changes. Inside a backoff window: held, reason ``Backoff``.
7. Otherwise: ``start`` the workflow of the desired state.

Then safety: a destructive action on a ``protected`` server is held (``Protected``); when the
destructive starts of this revision outnumber ``policy.max_destructive``, all of them are held
(``MaxDestructive``) and the rest proceed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from reconciler.machines.workflows import (
    POWER_OFF,
    POWER_ON,
    STATE_WORKFLOW,
    WORKFLOWS,
    Workflow,
)
from reconciler.model.desired import DesiredHost
from reconciler.model.policy import Policy
from reconciler.plan.status import HostStatus, Observed, Power


class Kind(StrEnum):
    NONE = "none"
    START = "start"
    CONTINUE = "continue"
    FORGET = "forget"
    RELEASE = "release"


class Hold(StrEnum):
    PROTECTED = "Protected"
    SUSPENDED = "Suspended"
    MAX_DESTRUCTIVE = "MaxDestructive"
    BACKOFF = "Backoff"
    STALLED = "Stalled"


@dataclass(frozen=True, slots=True)
class Action:
    host: str
    kind: Kind
    message: str
    workflow: str | None = None
    step: str | None = None  # the step it starts (or resumes) at
    target: str | None = None
    destructive: bool = False  # what is left of the workflow writes the disk
    disruptive: bool = False
    hold: Hold | None = None
    managed: bool = True  # False: the server is `unmanaged`, left exactly as it is

    @property
    def runnable(self) -> bool:
        return self.kind in (Kind.START, Kind.CONTINUE) and self.hold is None

    @property
    def blocked(self) -> bool:
        """Held by a safety rule a reviewer must know about (the plan says BLOCKED)."""
        return self.hold in (Hold.PROTECTED, Hold.MAX_DESTRUCTIVE)


def target_key(host: DesiredHost) -> str:
    """What a workflow drives to: the desired state, plus the digest of what it depends on
    (the disk's content; an inspection's inputs and ``inspect_generation``)."""
    if host.state == "provisioned":
        return f"provisioned:{host.digests.provision}"
    if host.state == "inspected":
        return f"inspected:{host.inspect_digest}"
    return host.state


def _start(host: DesiredHost, workflow: Workflow, message: str) -> Action:
    return Action(host.name, Kind.START, message, workflow.name, workflow.first,
                  target_key(host), workflow.destructive, workflow.disruptive)


def _decide_host(host: DesiredHost | None, observed: Observed | None, st: HostStatus,
                 policy: Policy, now: float) -> Action:
    name = st.name
    if host is None:
        if st.orphaned:
            return Action(name, Kind.NONE, "orphaned: not in the inventory (left as is)")
        return Action(name, Kind.FORGET, "removed from the inventory: forget it, left as is")
    if host.state == "unmanaged":
        if st.workflow:
            return Action(name, Kind.RELEASE,
                          f"unmanaged: abandon {st.workflow} at {st.step}, left as is",
                          managed=False)
        return Action(name, Kind.NONE, "unmanaged: never touched", managed=False)
    if host.suspend:
        return Action(name, Kind.NONE, "suspended: no action until suspend is removed",
                      hold=Hold.SUSPENDED)
    workflow = STATE_WORKFLOW[host.state]
    assert workflow is not None, host.state
    key = target_key(host)
    backoff = st.next_retry is not None and now < st.next_retry and st.attempt_target == key
    if st.workflow is not None and st.target == key and st.step is not None:
        running = WORKFLOWS[st.workflow]
        step = running.resume_point(st.step)
        action = Action(name, Kind.CONTINUE, f"{running.name}: resume at {step}",
                        running.name, step, key, running.destructive_from(step),
                        running.disruptive)
        if st.stalled_target == key:
            return replace(action, kind=Kind.NONE, hold=Hold.STALLED,
                           message=f"stalled in {running.name} at {st.step}: {st.last_error}")
        if backoff:
            return replace(action, hold=Hold.BACKOFF,
                           message=f"{running.name}: retry at {st.step} after a backoff")
        return action
    converged = st.applied_target == key and st.workflow is None
    if converged:
        power = observed.power if observed else Power.UNKNOWN
        # An inspected server is left off, like an ``off`` one.
        drift = (host.state == "provisioned" and power == Power.OFF) or (
            host.state in ("off", "inspected") and power == Power.ON)
        if not drift:
            return Action(name, Kind.NONE, f"{host.state}: up to date")
        fix = POWER_ON if host.state == "provisioned" else POWER_OFF
        if policy.power_drift == "report":
            return Action(name, Kind.NONE, f"{host.state} but found powered "
                          f"{power.value.lower()} (power_drift: report)")
        return _start(host, fix, f"{host.state} but found powered {power.value.lower()}: "
                      f"{fix.name}")
    if st.stalled_target == key:
        return Action(name, Kind.NONE, f"stalled: {st.last_error}", workflow.name,
                      target=key, hold=Hold.STALLED)
    if host.state == "provisioned":
        message = ("reprovision (disk wipe): the disk content changed"
                   if st.applied_provision else "provision (disk wipe)")
    elif host.state == "inspected":
        again = st.applied_target is not None and st.applied_target.startswith("inspected:")
        message = ("re-inspect: the inspection inputs changed" if again else "inspect") + \
            " (reboots into the ephemeral OS, then off; the disk is not touched)"
    else:
        message = workflow.name
    action = _start(host, workflow, message)
    if backoff:
        return replace(action, hold=Hold.BACKOFF, message=f"{message}: retry after a backoff")
    return action


def plan(desired: Mapping[str, DesiredHost], observed: Mapping[str, Observed],
         status: Mapping[str, HostStatus], policy: Policy, now: float) -> list[Action]:
    """One action per server in ``desired`` or ``status``, sorted by name."""
    actions = []
    for name in sorted(set(desired) | set(status)):
        host = desired.get(name)
        action = _decide_host(host, observed.get(name), status.get(name) or HostStatus(name),
                              policy, now)
        if action.destructive and host is not None and host.protected and \
                action.kind in (Kind.START, Kind.CONTINUE) and action.hold is None:
            action = replace(action, hold=Hold.PROTECTED,
                             message=f"BLOCKED (protected): would {action.message}")
        actions.append(action)
    wipes = [i for i, a in enumerate(actions) if a.kind == Kind.START and a.destructive
             and a.hold in (None, Hold.BACKOFF)]
    if len(wipes) > policy.max_destructive:
        for i in wipes:
            a = actions[i]
            actions[i] = replace(a, hold=Hold.MAX_DESTRUCTIVE, message=(
                f"BLOCKED ({len(wipes)} wipes in this revision, max_destructive "
                f"{policy.max_destructive}): would {a.message}"))
    return actions


def as_applied(hosts: Mapping[str, DesiredHost], revision: str | None = None,
               ) -> tuple[dict[str, HostStatus], dict[str, Observed]]:
    """Status and observation of a fleet that has converged on ``hosts`` (the base revision of
    a pull request): what ``reconciler plan`` feeds :func:`plan`."""
    status: dict[str, HostStatus] = {}
    observed: dict[str, Observed] = {}
    for name, h in hosts.items():
        reached = h.state != "unmanaged"
        status[name] = HostStatus(
            name, desired_state=h.state,
            applied_state=h.state if reached else None,
            applied_provision=h.digests.provision if h.state == "provisioned" else None,
            applied_target=target_key(h) if reached else None,
            last_applied_revision=revision)
        power = {"provisioned": Power.ON, "off": Power.OFF, "inspected": Power.OFF,
                 }.get(h.state, Power.UNKNOWN)
        observed[name] = Observed(power)
    return status, observed
