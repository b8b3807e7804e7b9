"""One reconcile pass, and the loop that runs it (APScheduler, jittered interval).

A pass: fetch the branch (a failed fetch keeps the last revision: servers still converge on
it) -> validate the revision whole -> each server's desired host (one with problems keeps its
last good one, and its status says why) -> ask the BMCs for power (not for unmanaged or
suspended servers) -> :func:`reconciler.plan.decide.plan` -> start runnable actions, fold the
rest into status. ``lastAttemptedRevision`` is recorded before acting; the fleet's
``lastAppliedRevision`` once a pass finds every server converged on the revision.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.engine.executor import Executor
from reconciler.engine.reports import Reports
from reconciler.engine.source import Fetched, GitSource
from reconciler.errors import ReconcilerError
from reconciler.log import redact
from reconciler.model.desired import DesiredHost, desired_hosts
from reconciler.model.inventory import TEMPLATES_DIR, Inventory, parse_inventory
from reconciler.model.policy import POLICY_FILE, Policy
from reconciler.model.problems import Problem
from reconciler.plan import conditions
from reconciler.plan.decide import Action, Hold, Kind, plan
from reconciler.plan.status import READY, HostStatus, Observed
from reconciler.render.renderer import RenderedHost, Renderer, RenderSettings, template_problems

LOG = logging.getLogger(__name__)


@dataclass
class Desired:
    """The last parsed revision and what each server should be (last good where invalid)."""

    fetched: Fetched | None = None
    inventory: Inventory | None = None
    hosts: dict[str, DesiredHost] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)  # name -> first problem
    policy: Policy = field(default_factory=Policy)
    problems: tuple[Problem, ...] = ()
    templates: Mapping[str, str] = field(default_factory=dict)  # the last good overrides


def desired_of(inventory: Inventory, problems: list[Problem], previous: Desired,
               fetched: Fetched) -> Desired:
    """Pure: the new revision's hosts; a server with problems keeps its previous host."""
    hosts = desired_hosts(inventory)
    problems = problems + template_problems(inventory, hosts)
    by_file: dict[str, str] = {}
    for p in problems:
        by_file.setdefault(p.file, str(p))
    # A template override is every server's: one that does not compile or is refused by the
    # sandbox leaves every server on its last good state.
    shared = next((text for file, text in by_file.items()
                   if file.startswith(TEMPLATES_DIR)), None)
    invalid: dict[str, str] = {}
    out: dict[str, DesiredHost] = {}
    for name, host in hosts.items():
        if host.file in by_file or shared is not None:
            invalid[name] = by_file.get(host.file) or str(shared)
            if name in previous.hosts:
                out[name] = previous.hosts[name]
            continue
        out[name] = host
    for name in inventory.rejected:
        server_problem = next((text for file, text in by_file.items()
                               if file.rsplit("/", 1)[-1].rsplit(".", 1)[0] == name), None)
        invalid[name] = server_problem or "invalid: see reconciler validate"
        if name in previous.hosts:
            out[name] = previous.hosts[name]
    policy_broken = any(p.file == POLICY_FILE for p in problems)
    policy = previous.policy if policy_broken else inventory.policy
    templates = previous.templates if shared is not None else dict(inventory.templates)
    return Desired(fetched, inventory, out, invalid, policy, tuple(problems), templates)


class Reconciler:
    def __init__(self, source: GitSource, executor: Executor, render_settings: RenderSettings,
                 *, clock: Callable[[], float] = time.time,
                 paused: Callable[[], bool] = lambda: False,
                 observe_interval: float = 0.0,
                 orphan_retention: float = 7 * 86400.0,
                 reports: Reports | None = None) -> None:
        self.source = source
        self.executor = executor
        self.db = executor.db
        self.render_settings = render_settings
        self.clock = clock
        self.paused = paused
        self.desired = Desired()
        self._renderer: Renderer | None = None
        self.passes = 0
        # Power observations, reused for up to ``observe_interval`` s (Ironic syncs power every
        # 120 s): one GET per BMC per pass costs ~2 ms of CPU each, 10 s a pass at 5,000.
        self.observe_interval = observe_interval
        # A server removed from git stays in the state (status Orphaned) this long.
        self.orphan_retention = orphan_retention
        self._observed: dict[str, tuple[float, Observed]] = {}
        # Out-of-band inventories and the commit-back of inspection reports (None: neither).
        self.reports = reports
        executor.evidence = self.evidence

    def render(self, host: DesiredHost, keys: Mapping[str, tuple[str, str]],
               purpose: str = "provision", inspection_id: str | None = None) -> RenderedHost:
        if self._renderer is None:
            self._renderer = Renderer(self.desired.templates, self.render_settings)
        return self._renderer.render(host, purpose, inspection_id=inspection_id,
                                     host_keys=keys)

    def evidence(self, name: str) -> Mapping[str, Any] | None:
        """The hardware evidence of ``name`` the engine checks a destructive workflow
        against: its committed report with what was collected since laid over it."""
        inventory = self.desired.inventory
        committed = inventory.inspections.get(name) if inventory is not None else None
        if self.reports is None:
            return committed
        return self.reports.evidence(name, committed, self.db.host(name))

    async def refresh(self) -> None:
        """Fetch and parse the branch; a failure keeps the last revision (and says so)."""
        now = self.clock()
        try:
            fetched = await self.executor.blocking(self.source.fetch)
        except ReconcilerError as exc:
            LOG.warning("fetch failed: %s", redact(str(exc)))
            self.executor.metrics.fetch_failed()
            self.db.set_fleet(lastFetchError=redact(str(exc)), lastFetchErrorAt=now)
            return
        self.db.set_fleet(lastFetched=fetched.revision, lastFetchedAt=now,
                          lastFetchedSubject=fetched.subject, lastFetchError=None)
        if self.desired.fetched is not None and fetched.commit == self.desired.fetched.commit:
            return
        try:
            snapshot = await self.executor.blocking(lambda: self.source.snapshot(fetched.commit))
            inventory, problems = parse_inventory(snapshot.files, seniority=snapshot.seniority,
                                                  refused=snapshot.refused)
            self.desired = desired_of(inventory, problems, self.desired, fetched)
        except ReconcilerError as exc:
            LOG.error("revision %s: %s", fetched.revision, redact(str(exc)))
            self.db.set_fleet(lastAttemptedRevision=fetched.revision,
                              lastError=redact(str(exc)))
            return
        self._renderer = None
        LOG.info("revision %s: %d servers, %d with problems", fetched.revision,
                 len(self.desired.hosts), len(self.desired.invalid))
        self.db.set_fleet(lastAttemptedRevision=fetched.revision, lastError=None,
                          problems=[str(p) for p in self.desired.problems[:50]])

    async def _observe(self, watch: Mapping[str, DesiredHost], now: float,
                       ) -> dict[str, Observed]:
        """Power of each watched server: asked again once its last answer is older than
        ``observe_interval`` (or was an error); servers with a workflow running are asked
        afresh on the pass after it."""
        for name in [n for n in self._observed if n not in watch]:
            del self._observed[name]  # busy, gone or unmanaged: ask again next time
        due = {n: h for n, h in watch.items()
               if not _fresh(self._observed.get(n), now, self.observe_interval)}
        if due:
            for name, seen in (await self.executor.observe(due)).items():
                self._observed[name] = (now, seen)
        return {n: self._observed[n][1] for n in watch}

    async def tick(self) -> list[Action]:
        """One pass. Returns the decided actions (for tests and the bench)."""
        self.passes += 1
        await self.refresh()
        return await self.reconcile()

    async def reconcile(self) -> list[Action]:
        d = self.desired
        if d.fetched is None:
            return []
        revision = d.fetched.revision
        now = self.clock()
        status = self.db.hosts()
        desired = dict(d.hosts)
        # A server whose file is invalid and that has no last good state is left out of the
        # decision (never forgotten for being invalid).
        plan_status = {n: s for n, s in status.items()
                       if n in desired or n not in d.invalid}
        managed = {n: h for n, h in desired.items() if h.state != "unmanaged" and not h.suspend}
        watch = {n: h for n, h in managed.items() if not self.executor.busy(n)}
        observed = await self._observe(watch, now)
        if self.reports is not None:
            self.reports.collect(managed, now)  # not while a workflow runs on the server
        actions = plan(desired, observed, plan_status, d.policy, now)
        updates: dict[str, HostStatus] = {}
        pending = False
        # controller-runtime's results: requeue (a workflow runs or starts), requeue_after
        # (a backoff), error (the BMC did not answer), success (converged or held).
        results = dict.fromkeys(("success", "error", "requeue", "requeue_after"), 0)
        for action in actions:
            name = action.host
            if self.executor.busy(name):
                pending = True
                results["requeue"] += 1
                continue
            seen = observed.get(name)
            results["error" if seen is not None and seen.error else
                    "requeue" if action.runnable else
                    "requeue_after" if action.hold == Hold.BACKOFF else "success"] += 1
            before = status.get(name) or HostStatus(name)
            host = desired.get(name)
            if host is not None and action.runnable and not self.paused():
                updates[name] = before.replace(
                    desired_state=host.state, invalid=d.invalid.get(name), orphaned=False,
                    orphaned_at=None,
                    last_attempted_revision=revision)
                self.executor.start(host, action, revision)
                pending = True
                continue
            converged = action.kind == Kind.NONE and action.hold is None
            pending = pending or not (converged or action.hold == Hold.SUSPENDED)
            st = _fold(before, action, host, d.invalid.get(name), revision,
                       seen.error if seen else None, converged)
            if action.kind == Kind.FORGET:
                st = st.replace(orphaned_at=now)
            elif st.orphaned and now - (st.orphaned_at or now) >= self.orphan_retention:
                LOG.info("%s: orphaned since %s, pruned from the state", name,
                         time.strftime("%Y-%m-%d %H:%M", time.gmtime(st.orphaned_at)))
                self.db.delete(name)
                continue
            if st is not before:
                updates[name] = st
        if updates:
            self.db.put_many(updates)
        for result, count in results.items():
            self.executor.metrics.reconciled(result, count)
        fleet: dict[str, Any] = {"lastAttemptedRevision": revision, "lastPassAt": now}
        if self.reports is not None and d.inventory is not None:
            fleet.update(self._write_back(desired, d.inventory, now))
        if not pending and not d.invalid:
            fleet["lastAppliedRevision"] = revision
            if self.db.fleet().get("lastAppliedRevision") != revision:
                fleet["lastAppliedAt"] = now
        self.db.set_fleet(**fleet)
        return actions


    def _write_back(self, desired: Mapping[str, DesiredHost], inventory: Inventory,
                    now: float) -> dict[str, Any]:
        """Start committing the reports that changed (not while the brake is on: git may be
        what is wrong); the fleet record says how the last write went."""
        assert self.reports is not None
        if not self.paused():
            changes = self.reports.changes(desired, inventory.inspections, self.db.hosts())
            self.reports.flush(changes, now)
        return {"lastWritebackError": self.reports.last_error,
                "reportsPending": sorted(self.reports.pending)}


def _fresh(seen: tuple[float, Observed] | None, now: float, interval: float) -> bool:
    return seen is not None and seen[1].error is None and now - seen[0] < interval


def _fold(st: HostStatus, action: Action, host: DesiredHost | None, invalid: str | None,
          revision: str, observe_error: str | None, converged: bool) -> HostStatus:
    """The server's status after this pass's decision (``st`` itself when nothing changed:
    the common case of a converged fleet costs no record)."""
    ready = st.condition(READY)
    if converged and host is not None and st.desired_state == host.state and \
            not st.orphaned and st.invalid == invalid and st.observe_error == observe_error and \
            st.last_applied_revision == revision and st.last_attempted_revision == revision \
            and ready is not None and ready.status == "True" and ready.message == action.message:
        return st
    new = st if host is None else st.replace(desired_state=host.state, invalid=invalid,
                                             orphaned=False, orphaned_at=None)
    new = conditions.fold_action(new, action).replace(observe_error=observe_error)
    ready = new.condition(READY)
    if converged and ready is not None and ready.status == "True":
        new = new.replace(last_applied_revision=revision, last_attempted_revision=revision)
    return st if new == st else new


async def run_forever(reconciler: Reconciler, interval: float, stop: asyncio.Event,
                      wake: asyncio.Event | None = None) -> None:
    """Passes every ``interval`` s (jittered 5 %, as Flux's default) until ``stop``; ``wake``
    starts a pass at once (a webhook). APScheduler runs the timer; passes never overlap."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    trigger = asyncio.Event()
    scheduler = AsyncIOScheduler()
    scheduler.add_job(trigger.set, "interval", seconds=interval, jitter=max(interval * 0.05, 0),
                      max_instances=1, coalesce=True)
    scheduler.start()
    trigger.set()  # the first pass at once
    try:
        while not stop.is_set():
            waiters = [asyncio.create_task(trigger.wait()), asyncio.create_task(stop.wait())]
            if wake is not None:
                waiters.append(asyncio.create_task(wake.wait()))
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            if stop.is_set():
                break
            trigger.clear()
            if wake is not None:
                wake.clear()
            try:
                await reconciler.tick()
            except Exception:  # one bad pass must not end the loop
                LOG.exception("reconcile pass failed")
    finally:
        scheduler.shutdown(wait=False)
