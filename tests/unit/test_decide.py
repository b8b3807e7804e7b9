"""The decision function on plain data: every (desired state x observed x status) cell."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from reconciler.machines.workflows import PROVISION, STATE_WORKFLOW, WORKFLOWS
from reconciler.model import parse_inventory
from reconciler.model.desired import DesiredHost, desired_hosts
from reconciler.model.policy import Policy
from reconciler.plan.decide import Hold, Kind, as_applied, plan, target_key
from reconciler.plan.status import HostStatus, Observed, Power
from tests.fixtures.inventory import files, server

NOW = 1_000_000.0


def hosts(**docs: dict[str, object]) -> dict[str, DesiredHost]:
    inv, problems = parse_inventory(files(docs))
    assert problems == []
    return desired_hosts(inv)


def one(state: str = "provisioned", **overrides: object) -> DesiredHost:
    return hosts(n1=server(1, state=state, **overrides))["n1"]


def converged(h: DesiredHost) -> HostStatus:
    return as_applied({h.name: h})[0][h.name]


# Status shapes a server can be found in, for a desired host h.
def statuses(h: DesiredHost) -> dict[str, HostStatus]:
    key = target_key(h)
    own = STATE_WORKFLOW[h.state] or PROVISION
    return {
        "new": HostStatus(h.name),
        "converged": converged(h),
        "other-disk": HostStatus(h.name, applied_state="provisioned", applied_provision="x" * 64,
                                 applied_target="provisioned:" + "x" * 64),
        "in-flight": HostStatus(h.name, workflow=own.name, step=own.steps[-1].name, target=key),
        "in-flight-old": HostStatus(h.name, workflow="provision", step="write-image",
                                    target="provisioned:" + "y" * 64),
        "backoff": HostStatus(h.name, attempt_target=key, attempts=2, next_retry=NOW + 60),
        "backoff-over": HostStatus(h.name, attempt_target=key, attempts=2, next_retry=NOW - 1),
        "stalled": HostStatus(h.name, stalled_target=key, last_error="no disk with serial X"),
    }


OBSERVED = {"on": Observed(Power.ON), "off": Observed(Power.OFF),
            "unknown": Observed(Power.UNKNOWN)}

# (desired state, status shape) -> (kind, workflow, hold) for any observation except where the
# observation matters (converged; see the drift test).
EXPECTED = {
    ("provisioned", "new"): (Kind.START, "provision", None),
    ("provisioned", "other-disk"): (Kind.START, "provision", None),
    ("provisioned", "in-flight"): (Kind.CONTINUE, "provision", None),
    ("provisioned", "in-flight-old"): (Kind.START, "provision", None),
    ("provisioned", "backoff"): (Kind.START, "provision", Hold.BACKOFF),
    ("provisioned", "backoff-over"): (Kind.START, "provision", None),
    ("provisioned", "stalled"): (Kind.NONE, "provision", Hold.STALLED),
    ("off", "new"): (Kind.START, "power-off", None),
    ("off", "other-disk"): (Kind.START, "power-off", None),
    ("off", "in-flight"): (Kind.CONTINUE, "power-off", None),
    ("off", "in-flight-old"): (Kind.START, "power-off", None),
    ("off", "backoff"): (Kind.START, "power-off", Hold.BACKOFF),
    ("off", "backoff-over"): (Kind.START, "power-off", None),
    ("off", "stalled"): (Kind.NONE, "power-off", Hold.STALLED),
    ("inspected", "new"): (Kind.START, "inspect", None),
    ("inspected", "other-disk"): (Kind.START, "inspect", None),
    ("inspected", "in-flight"): (Kind.CONTINUE, "inspect", None),
    ("inspected", "in-flight-old"): (Kind.START, "inspect", None),
    ("inspected", "backoff"): (Kind.START, "inspect", Hold.BACKOFF),
    ("inspected", "backoff-over"): (Kind.START, "inspect", None),
    ("inspected", "stalled"): (Kind.NONE, "inspect", Hold.STALLED),
}


@pytest.mark.parametrize(("state", "shape", "seen"), list(itertools.product(
    ("provisioned", "off", "inspected", "unmanaged"),
    ("new", "converged", "other-disk", "in-flight", "in-flight-old", "backoff",
     "backoff-over", "stalled"),
    sorted(OBSERVED))))
def test_every_cell(state: str, shape: str, seen: str) -> None:
    h = one(state)
    st = statuses(h)[shape]
    (action,) = plan({"n1": h}, {"n1": OBSERVED[seen]}, {"n1": st}, Policy(), NOW)
    assert action.host == "n1"
    if state == "unmanaged":
        expected_kind = Kind.RELEASE if st.workflow else Kind.NONE
        assert (action.kind, action.hold) == (expected_kind, None)
        return
    if shape == "converged":
        drift = (state == "provisioned" and seen == "off") or (
            state in ("off", "inspected") and seen == "on")
        if drift:
            assert action.kind == Kind.START
            assert action.workflow == ("power-on" if state == "provisioned" else "power-off")
            assert not action.destructive and action.disruptive
        else:
            assert (action.kind, action.hold) == (Kind.NONE, None)
        return
    kind, workflow, hold = EXPECTED[(state, shape)]
    assert (action.kind, action.workflow, action.hold) == (kind, workflow, hold), action
    wf = WORKFLOWS[workflow]
    if kind == Kind.START:
        assert action.step == wf.first
        assert action.destructive == wf.destructive
        assert action.disruptive
    if kind == Kind.CONTINUE:
        assert action.step == wf.resume_point(st.step or "")


def test_resume_points_of_a_crash_in_each_provisioning_step() -> None:
    h = one()
    resumed = {}
    for step in PROVISION.steps:
        st = HostStatus("n1", workflow="provision", step=step.name, target=target_key(h))
        (action,) = plan({"n1": h}, {}, {"n1": st}, Policy(), NOW)
        assert action.kind == Kind.CONTINUE
        resumed[step.name] = action.step
        assert action.destructive == PROVISION.destructive_from(action.step or "")
    assert resumed["power-on"] == "power-off"
    assert resumed["write-image"] == "ssh-ephemeral"
    # After the seed is on the disk the image is never written again.
    assert resumed["boot-disk"] == "eject-after" and resumed["ssh-installed"] == "ssh-installed"
    assert not PROVISION.destructive_from("eject-after")


def test_removed_server_is_forgotten_and_never_touched() -> None:
    st = HostStatus("gone", applied_state="provisioned", workflow="provision", step="seed")
    (action,) = plan({}, {}, {"gone": st}, Policy(), NOW)
    assert action.kind == Kind.FORGET and not action.runnable
    (again,) = plan({}, {}, {"gone": dataclasses.replace(st, orphaned=True)}, Policy(), NOW)
    assert again.kind == Kind.NONE


def test_suspend_holds_everything() -> None:
    h = one(suspend=True)
    for st in statuses(h).values():
        (action,) = plan({"n1": h}, {"n1": Observed(Power.OFF)}, {"n1": st}, Policy(), NOW)
        assert action.hold == Hold.SUSPENDED and not action.runnable


def test_protected_blocks_destructive_only() -> None:
    h = one(protected=True)
    (wipe,) = plan({"n1": h}, {}, {"n1": HostStatus("n1")}, Policy(), NOW)
    assert wipe.hold == Hold.PROTECTED and wipe.blocked and "BLOCKED (protected)" in wipe.message
    # Past the disk write, finishing the workflow is not destructive: it proceeds.
    late = HostStatus("n1", workflow="provision", step="power-cycle", target=target_key(h))
    (rest,) = plan({"n1": h}, {}, {"n1": late}, Policy(), NOW)
    assert rest.runnable and not rest.destructive
    off = one("off", protected=True)
    (power,) = plan({"n1": off}, {}, {"n1": HostStatus("n1")}, Policy(), NOW)
    assert power.runnable and power.workflow == "power-off"


def test_power_drift_report_only_reports() -> None:
    h = one()
    (action,) = plan({"n1": h}, {"n1": Observed(Power.OFF)}, {"n1": converged(h)},
                     Policy(power_drift="report"), NOW)
    assert action.kind == Kind.NONE and "power_drift: report" in action.message


def test_max_destructive_holds_all_wipes_and_lets_the_rest_proceed() -> None:
    docs = {f"n{i}": server(i) for i in range(1, 6)}
    docs["n6"] = server(6, state="off")
    desired = hosts(**docs)
    actions = plan(desired, {}, {}, Policy(max_destructive=3), NOW)
    by = {a.host: a for a in actions}
    assert all(by[f"n{i}"].hold == Hold.MAX_DESTRUCTIVE for i in range(1, 6))
    assert "5 wipes in this revision, max_destructive 3" in by["n1"].message
    assert by["n6"].runnable
    raised = plan(desired, {}, {}, Policy(max_destructive=5), NOW)
    assert all(a.runnable for a in raised)


def test_in_flight_destructive_workflows_do_not_count_against_the_limit() -> None:
    desired = hosts(**{f"n{i}": server(i) for i in range(1, 5)})
    status = {name: HostStatus(name, workflow="provision", step="write-image",
                               target=target_key(h)) for name, h in desired.items()}
    actions = plan(desired, {}, status, Policy(max_destructive=1), NOW)
    assert all(a.kind == Kind.CONTINUE and a.runnable for a in actions)


def test_every_state_has_a_slot() -> None:
    from reconciler.model.inventory import STATES

    assert set(STATE_WORKFLOW) == set(STATES)


def test_inspecting_a_provisioned_server_reboots_it_but_is_not_destructive() -> None:
    before = one("provisioned")
    after = one("inspected")
    (action,) = plan({"n1": after}, {"n1": Observed(Power.ON)}, {"n1": converged(before)},
                     Policy(max_destructive=0), NOW)
    assert (action.kind, action.workflow, action.hold) == (Kind.START, "inspect", None)
    assert action.disruptive and not action.destructive
    assert "disk is not touched" in action.message


def test_a_protected_server_may_be_inspected() -> None:
    h = one("inspected", protected=True)
    (action,) = plan({"n1": h}, {}, {"n1": HostStatus("n1")}, Policy(), NOW)
    assert action.runnable


def test_reinspection_on_inspect_generation_only() -> None:
    h = one("inspected")
    st = converged(h)
    (idle,) = plan({"n1": h}, {"n1": Observed(Power.OFF)}, {"n1": st}, Policy(), NOW)
    assert (idle.kind, idle.hold) == (Kind.NONE, None)
    # A changed SSH key or disk does not re-inspect; a bumped inspect_generation does.
    for other in (one("inspected", cloud_init={"ssh_keys": [
                      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther admin@x"]}),
                  one("inspected", disk={"serial": "OTHER"})):
        (same,) = plan({"n1": other}, {"n1": Observed(Power.OFF)}, {"n1": st}, Policy(), NOW)
        assert same.kind == Kind.NONE, same
    bumped = one("inspected", inspect_generation=1)
    (again,) = plan({"n1": bumped}, {"n1": Observed(Power.OFF)}, {"n1": st}, Policy(), NOW)
    assert (again.kind, again.workflow) == (Kind.START, "inspect")
    assert again.message.startswith("re-inspect")
