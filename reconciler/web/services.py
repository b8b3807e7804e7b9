"""The objects the blueprints use, hung on the Flask app by ``create_app``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import current_app

from reconciler.adapters.store import BuildStore, CheckinStore
from reconciler.engine.buildqueue import Builder, BuildQueue
from reconciler.settings import ServiceSettings
from reconciler.web.fleet import FleetLink

LOG = logging.getLogger(__name__)


@dataclass
class Services:
    store: BuildStore
    checkins: CheckinStore
    queue: BuildQueue

    @classmethod
    def open(cls, settings: ServiceSettings, builder: Builder | None = None) -> Services:
        """Lock and load the data directory, re-queue interrupted builds, start workers."""
        store = BuildStore(settings.data_dir)
        records = store.open()
        checkins = CheckinStore(settings.data_dir)
        checkins.open()
        queue = BuildQueue(
            store,
            settings.images,
            workers=settings.workers,
            maxsize=settings.queue_length,
            builder=builder,
        )
        queue.start(records)
        LOG.info(
            "data %s: %d builds, %d checkins; base artifacts from %s",
            settings.data_dir,
            len(records),
            sum(1 for _ in checkins),
            settings.images,
        )
        return cls(store, checkins, queue)

    def close(self, timeout: float) -> bool:
        """Stop the workers (up to ``timeout`` s for running builds) and unlock the data dir."""
        stopped = self.queue.stop(timeout)
        self.checkins.close()
        self.store.close()
        return stopped


def services() -> Services:
    found: Services = current_app.extensions["reconciler.services"]
    return found


def settings() -> ServiceSettings:
    found: ServiceSettings = current_app.extensions["reconciler.settings"]
    return found


def start(settings: ServiceSettings, fleet: FleetLink | None = None) -> Callable[[], bool]:
    """The whole service in this process (``reconciler serve``, and embedded in ``reconciler
    run`` with its ``fleet``): its objects, the app, the listeners. Returns the stop function,
    which gives running requests and builds ``shutdown_timeout`` seconds and says whether all
    ended in time."""
    from reconciler.web.app import create_app
    from reconciler.web.server import DualServer

    services = Services.open(settings)
    try:
        server = DualServer(create_app(settings, services, fleet), settings)
        urls = server.start()
    except BaseException:
        services.close(0)
        raise
    LOG.info(
        "listening on %s; artifact URLs %s%s; trusted %s",
        ", ".join(urls),
        settings.public_url,
        f" and {settings.public_tls_url}" if settings.public_tls_url else "",
        ", ".join(map(str, settings.trusted)) or "none",
    )

    def stop() -> bool:
        deadline = time.monotonic() + settings.shutdown_timeout
        clean = server.stop(settings.shutdown_timeout)
        return services.close(max(0.0, deadline - time.monotonic())) and clean

    return stop
