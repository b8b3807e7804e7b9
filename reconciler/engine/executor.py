"""The executor: runs the decided actions as asyncio tasks, one per server.

- Redfish calls run in a bounded thread pool (the driver is blocking); mutations to one BMC
  address are serialised, reads are not, and a dead BMC only ever holds its own calls.
- Provisioning workflows take a slot of ``max_concurrent_provisioning``; power workflows do not.
- Before a step starts, the server's status naming the step and the step's history row are
  committed together (:meth:`StateDB.begin_step`); ``ctx.scratch`` is committed after every
  check, so ``kill -9`` loses at most the check in flight.
- A :class:`TemporaryError` schedules a retry from the step's resume point after a capped,
  jittered exponential backoff (Metal3's: between half and all of ``base * 2**(n-1)``); the
  ``max_attempts``-th failure for one target, or any :class:`PermanentError`, stalls the server
  until its desired state changes. Never an endless loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncssh

from reconciler.adapters import ssh
from reconciler.adapters.buildclient import BuildClient
from reconciler.adapters.redfish.driver import BmcDriver
from reconciler.adapters.statedb import StateDB
from reconciler.engine import keys as hostkeys
from reconciler.engine.metrics import Metrics
from reconciler.engine.steps import STEPS, Done, StepContext, Wait
from reconciler.errors import PermanentError, ReconcilerError, TemporaryError
from reconciler.log import redact
from reconciler.machines.workflows import INSPECT, PROVISION, WORKFLOWS, Workflow
from reconciler.model.desired import DesiredHost
from reconciler.plan import conditions
from reconciler.plan.decide import Action, Kind
from reconciler.plan.status import HostStatus, Observed, Power
from reconciler.render.renderer import RenderedHost

LOG = logging.getLogger(__name__)
T = TypeVar("T")

BmcFactory = Callable[[DesiredHost], BmcDriver]
# (host, host keys by stage, purpose, inspection id) -> the seed files and build request.
Render = Callable[[DesiredHost, Mapping[str, tuple[str, str]], str, str | None], RenderedHost]


@dataclass(frozen=True, slots=True)
class Limits:
    max_concurrent_provisioning: int = 10
    max_attempts: int = 5
    backoff_base: float = 10.0
    backoff_max: float = 900.0
    redfish_threads: int = 16
    graceful_timeout: float = 60.0
    ssh_port: int = 22


def backoff(attempts: int, base: float, cap: float, rand: Callable[[], float]) -> float:
    full = min(cap, base * 2.0 ** max(attempts - 1, 0))
    return float(full - rand() * full * 0.5)


class Executor:
    def __init__(self, db: StateDB, *, bmc_factory: BmcFactory, build: BuildClient,
                 render: Render, client_key: asyncssh.SSHKey, limits: Limits = Limits(),
                 clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random,
                 may_start_step: Callable[[str], bool] = lambda name: True,
                 connect: Callable[..., Awaitable[Any]] = ssh.connect,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 metrics: Metrics | None = None) -> None:
        self.db = db
        self.bmc_factory = bmc_factory
        self.build = build
        self.render = render
        self.client_key = client_key
        self.limits = limits
        self.clock = clock
        self.rand = rand
        self.may_start_step = may_start_step
        self.connect = connect
        self.sleep = sleep
        self.metrics = metrics or Metrics(process=False)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._bmcs: dict[tuple[str, str | None, str], BmcDriver] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._pool = ThreadPoolExecutor(limits.redfish_threads, thread_name_prefix="redfish")
        self._slots = asyncio.Semaphore(limits.max_concurrent_provisioning)
        # name -> the server's hardware evidence (committed report and what was collected
        # since): a destructive workflow is refused when it contradicts the server file.
        self.evidence: Callable[[str], Mapping[str, Any] | None] = lambda name: None

    # -- Redfish -----------------------------------------------------------------------------

    def _bmc(self, host: DesiredHost) -> BmcDriver:
        key = (host.bmc.url, host.bmc.system_id, host.bmc.credentials)
        bmc = self._bmcs.get(key)
        if bmc is None:
            bmc = self._bmcs[key] = self.bmc_factory(host)
        return bmc

    async def blocking(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def redfish(self, host: DesiredHost, fn: Callable[[BmcDriver], T], *,
                      mutate: bool = True) -> T:
        """``fn(driver)`` in the pool; mutations hold the BMC address's lock. A driver made
        before is found on the loop's thread: one hand-off to the pool per call, not two."""
        bmc = self._bmcs.get((host.bmc.url, host.bmc.system_id, host.bmc.credentials))
        if bmc is None:
            bmc = await self.blocking(lambda: self._bmc(host))
        if not mutate:
            return await self.blocking(lambda: fn(bmc))
        lock = self._locks.setdefault(host.bmc.url, asyncio.Lock())
        async with lock:
            return await self.blocking(lambda: fn(bmc))

    async def observe(self, hosts: Mapping[str, DesiredHost]) -> dict[str, Observed]:
        """Power state of every host, all at once; a failing BMC is ``Unknown`` with why."""
        async def one(host: DesiredHost) -> Observed:
            try:
                power = await self.redfish(host, lambda b: b.power_state(), mutate=False)
            except ReconcilerError as exc:
                return Observed(Power.UNKNOWN, redact(str(exc)))
            except Exception as exc:  # a driver bug must not stop the pass
                return Observed(Power.UNKNOWN, f"{type(exc).__name__}: {redact(str(exc))}")
            value = str(power)
            return Observed(Power(value) if value in ("On", "Off") else Power.UNKNOWN)

        names = list(hosts)
        found = await asyncio.gather(*(one(hosts[n]) for n in names))
        return dict(zip(names, found, strict=True))

    # -- actions -----------------------------------------------------------------------------

    def busy(self, name: str) -> bool:
        task = self.tasks.get(name)
        return task is not None and not task.done()

    def start(self, host: DesiredHost, action: Action, revision: str | None) -> None:
        """Run ``action`` (runnable) in a task of its own unless one runs for the host."""
        assert action.runnable and action.workflow and action.step
        if self.busy(host.name):
            return
        task = asyncio.create_task(self._run(host, action, revision), name=host.name)
        self.tasks[host.name] = task
        task.add_done_callback(lambda t: self._done(host.name, t))

    def _done(self, name: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(name) is task:
            del self.tasks[name]
        if not task.cancelled() and task.exception() is not None:
            LOG.error("%s: workflow task failed: %s", name, redact(str(task.exception())))

    async def run_workflow(self, host: DesiredHost, name: str, revision: str | None = None,
                           ) -> HostStatus:
        """Run workflow ``name`` on ``host`` now, to its end (``reconciler lab boot``)."""
        workflow = WORKFLOWS[name]
        target = f"{workflow.reaches}:{host.digests.spec}"
        action = Action(host.name, Kind.START, workflow.name, workflow.name, workflow.first,
                        target, workflow.destructive, workflow.disruptive)
        self.start(host, action, revision)
        await self.wait_idle()
        found = self.db.host(host.name)
        assert found is not None
        return found

    async def wait_idle(self) -> None:
        while self.tasks:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for bmc in self._bmcs.values():
            close = getattr(bmc, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    async def _run(self, host: DesiredHost, action: Action, revision: str | None) -> None:
        workflow = WORKFLOWS[str(action.workflow)]
        slot = self._slots if workflow is PROVISION else None
        async with slot if slot is not None else contextlib.nullcontext():
            await self._workflow(host, action, workflow, revision)

    async def _workflow(self, host: DesiredHost, action: Action, workflow: Workflow,
                        revision: str | None) -> None:
        name = host.name
        st = self.db.host(name) or HostStatus(name)
        target = str(action.target)
        if action.kind == Kind.START:
            st = st.replace(workflow=workflow.name, target=target, progress={})
        if st.attempt_target != target:
            st = st.replace(attempt_target=target, attempts=0, next_retry=None,
                            stalled_target=None)
        st = st.replace(last_attempted_revision=revision, next_retry=None, desired_state=host.state)
        scratch: dict[str, Any] = dict(st.progress)
        keys: Mapping[str, tuple[str, str]] = {}
        rendered = None
        if workflow in (PROVISION, INSPECT):
            keys = await self.blocking(lambda: hostkeys.host_keys(self.db, name, target))
            inspection = None
            if workflow is INSPECT:
                inspection = scratch.setdefault("inspection_id", str(uuid.uuid4()))
            purpose = "inspect" if workflow is INSPECT else "provision"
            rendered = self.render(host, keys, purpose, inspection)
        step: str | None = str(action.step)
        while step is not None:
            if not self.may_start_step(name):
                LOG.info("%s: %s stops before %s (paused or suspended)", name, workflow.name,
                         step)
                self.db.put(st.replace(step=step, progress=dict(scratch)))
                return
            spec = workflow.step(step)
            started = self.clock()
            st = conditions.progressing(
                st.replace(step=step, step_started=started, progress=dict(scratch)),
                f"{workflow.name}: {spec.summary}", retry=st.attempts > 0)
            run_id = self.db.begin_step(st, started)
            LOG.info("%s: %s: %s", name, workflow.name, step)

            def save(st: HostStatus = st) -> None:
                self.db.put(st.replace(progress=dict(scratch)))

            ctx = StepContext(
                host=host, target=target, rendered=rendered,
                instance_id=_instance_id(rendered), host_keys=keys, build=self.build,
                redfish=lambda fn: self.redfish(host, fn), blocking=self.blocking,
                client_key=self.client_key, now=self.clock, save=save, started=started,
                graceful_timeout=self.limits.graceful_timeout, ssh_port=self.limits.ssh_port,
                scratch=scratch, connect=self.connect, evidence=lambda: self.evidence(name))
            try:
                note = await self._step(ctx, spec.timeout, step)
            except asyncio.CancelledError:
                self.db.end_step(run_id, st.replace(progress=dict(scratch)), self.clock(),
                                 "interrupted", "the reconciler stopped")
                self.metrics.step_finished(workflow.name, step, self.clock() - started,
                                           "interrupted")
                raise
            except ReconcilerError as exc:
                self._failed(st.replace(progress=dict(scratch)), run_id, workflow, step, exc)
                return
            except Exception as exc:  # a bug: retried like a temporary error, and logged
                LOG.exception("%s: %s: %s", name, step, type(exc).__name__)
                error = TemporaryError(f"{step}: internal error {type(exc).__name__}: {exc}")
                self._failed(st.replace(progress=dict(scratch)), run_id, workflow, step, error)
                return
            st = st.replace(progress=dict(scratch))
            ended = self.clock()
            self.db.end_step(run_id, st, ended, "ok", note)
            self.metrics.step_finished(workflow.name, step, ended - started, "ok")
            step = workflow.after(step)
        reached = workflow.reaches
        before = st.applied_state
        provision = host.digests.provision if workflow is PROVISION else st.applied_provision
        if workflow is INSPECT:
            st = st.replace(inspection=scratch.get("hardware"))
        st = conditions.ready(st.replace(
            workflow=None, step=None, step_started=None, progress={}, applied_state=reached,
            applied_provision=provision, applied_target=target,
            last_applied_revision=revision, attempts=0, next_retry=None, last_error=None,
            stalled_target=None), f"{workflow.name} done")
        self.db.put(st)
        if before != reached:
            self.metrics.transition(before, reached)
        LOG.info("%s: %s done", name, workflow.name)

    async def _step(self, ctx: StepContext, timeout: float, step: str) -> str:
        impl = STEPS[step]
        while True:
            outcome = await impl(ctx)
            ctx.save()
            if isinstance(outcome, Done):
                return outcome.note
            assert isinstance(outcome, Wait)
            waited = self.clock() - ctx.started
            if waited > timeout:
                raise TemporaryError(f"{step} did not finish within {timeout:g} s: "
                                     f"{outcome.note}", delay=0)
            await self.sleep(outcome.delay)

    def _failed(self, st: HostStatus, run_id: int, workflow: Workflow, step: str,
                exc: ReconcilerError) -> None:
        message = redact(f"{step}: {exc}")
        attempts = st.attempts + 1
        now = self.clock()
        st = st.replace(attempts=attempts, last_error=message)
        temporary = isinstance(exc, TemporaryError) and not isinstance(exc, PermanentError)
        if temporary and attempts < self.limits.max_attempts:
            delay = max(backoff(attempts, self.limits.backoff_base, self.limits.backoff_max,
                                self.rand), float(getattr(exc, "delay", 0)))
            st = conditions.progressing(st.replace(next_retry=now + delay),
                                        f"{message} (attempt {attempts} of "
                                        f"{self.limits.max_attempts}, retry in {delay:.0f} s)",
                                        retry=True)
            LOG.warning("%s: %s; retry in %.0f s", st.name, message, delay)
        else:
            reason = getattr(exc, "reason", None) or (
                "RetriesExhausted" if temporary else conditions.step_reason(step))
            if temporary:
                message = f"{message} (gave up after {attempts} attempts)"
            st = conditions.stalled(st.replace(stalled_target=st.target, last_error=message),
                                    reason, message)
            LOG.error("%s: stalled: %s", st.name, message)
        self.db.end_step(run_id, st, now, "error", message)
        self.metrics.step_finished(workflow.name, step, now - st.step_started
                                   if st.step_started else 0.0, "error")
        self.metrics.error(getattr(exc, "reason", None) or type(exc).__name__)


def _instance_id(rendered: RenderedHost | None) -> str:
    if rendered is None:
        return ""
    for line in rendered.meta_data.splitlines():
        if line.startswith("instance-id:"):
            return line.partition(":")[2].strip()
    raise PermanentError("rendered meta-data has no instance-id")
