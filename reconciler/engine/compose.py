"""The composition root: the one place that builds the engine's services from settings.

``reconciler run`` and ``reconciler lab boot`` both call :func:`open_engine`: the state
database, the reconciler's SSH key, the build service (embedded in this process, or external)
and its REST client, the Redfish drivers (credentials resolved at run time), the executor. The
embedded service's own objects (build store, queue, checkins) are built by
:meth:`reconciler.web.services.Services.open` and reached by the engine only over HTTP, the
contract every client uses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.adapters import secrets as creds
from reconciler.adapters.buildclient import BuildClient
from reconciler.adapters.redfish.client import BmcEndpoint
from reconciler.adapters.redfish.driver import Bmc
from reconciler.adapters.statedb import StateDB
from reconciler.engine import keys
from reconciler.engine.brake import Brake
from reconciler.engine.config import RunSettings, resolve_webhook_secret
from reconciler.engine.executor import Executor, Limits
from reconciler.engine.metrics import Metrics
from reconciler.model.desired import DesiredHost
from reconciler.render.renderer import RenderedHost, Renderer, RenderSettings

LOG = logging.getLogger(__name__)


@dataclass
class Engine:
    db: StateDB
    executor: Executor
    render_settings: RenderSettings
    service_url: str
    brake: Brake  # the pause file: no new step while it is set
    wake: asyncio.Event  # set (from any thread, through the FleetLink) to start a pass now
    # The renderer of the inventory being reconciled (its template overrides); the loop
    # replaces it on every new revision.
    renderer: Renderer | None = None

    def render(self, host: DesiredHost, host_keys: Mapping[str, tuple[str, str]],
               purpose: str, inspection_id: str | None) -> RenderedHost:
        if self.renderer is None:
            self.renderer = Renderer({}, self.render_settings)
        return self.renderer.render(host, purpose, inspection_id=inspection_id,
                                    host_keys=host_keys)


def bmc_factory(secrets_dir: Path | None) -> Callable[[DesiredHost], Bmc]:
    directory = creds.secrets_dir(secrets_dir)

    def make(host: DesiredHost) -> Bmc:
        c = creds.resolve(host.bmc.credentials, directory=directory)
        verify: bool | Path = host.bmc.verify_tls
        if host.bmc.ca_bundle:
            verify = Path(host.bmc.ca_bundle)
        return Bmc(BmcEndpoint(host.bmc.url, c.username, c.password, verify=verify,
                               system_id=host.bmc.system_id))

    return make


@asynccontextmanager
async def open_engine(settings: RunSettings, *, embedded: bool | None = None) -> Any:
    """Yield an :class:`Engine`; everything is stopped and closed on exit. ``embedded``:
    start the build service in this process (default: unless ``build_service_url``)."""
    for noisy in ("apscheduler", "asyncssh"):
        # Every timer tick and every connection attempt at INFO: the engine's lines say more.
        logging.getLogger(noisy).setLevel(logging.WARNING)
    db = StateDB(settings.state_db)
    closed = db.close_interrupted(time.time())
    if closed:
        LOG.info("%d step(s) were interrupted by the last stop: resuming", closed)
    client_key, public = keys.reconciler_key(settings.ssh_dir)
    brake = Brake(settings.data_dir)
    wake = asyncio.Event()
    loop = asyncio.get_running_loop()
    metrics = Metrics()
    stop_service = None
    if embedded is None:
        embedded = not settings.build_service_url
    if embedded:
        from reconciler.web.fleet import FleetLink
        from reconciler.web.services import start

        def wake_soon() -> None:  # from the service's threads
            loop.call_soon_threadsafe(wake.set)

        link = FleetLink(settings.data_dir, settings.branch, wake=wake_soon,
                         webhook_secret=resolve_webhook_secret(settings), metrics=metrics)
        stop_service = start(settings.service, link)
        listen = settings.service.listen
        host = "127.0.0.1" if listen.host in ("0.0.0.0", "") else listen.host
        service_url, public_url = f"http://{host}:{listen.port}", settings.service.public_url
    else:
        service_url = public_url = settings.build_service_url
    limits = Limits(settings.max_concurrent_provisioning, settings.max_attempts,
                    settings.backoff_base, settings.backoff_max, settings.redfish_threads,
                    settings.graceful_timeout)
    engine: Engine | None = None

    def render(h: DesiredHost, k: Mapping[str, tuple[str, str]], purpose: str,
               inspection_id: str | None) -> RenderedHost:
        assert engine is not None
        return engine.render(h, k, purpose, inspection_id)

    executor = Executor(db, bmc_factory=bmc_factory(settings.secrets_dir),
                        build=BuildClient(service_url), render=render, client_key=client_key,
                        limits=limits, may_start_step=lambda name: not brake(),
                        metrics=metrics)
    engine = Engine(db, executor, RenderSettings(public_url=public_url, ssh_keys=(public,)),
                    service_url, brake, wake)
    try:
        yield engine
    finally:
        await executor.stop()
        if stop_service is not None:
            stop_service()
        db.close()
