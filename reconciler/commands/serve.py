"""``reconciler serve``: the build / artifact / checkin service.

Settings come from ``--config FILE`` (YAML), overridden by ``RECONCILER_*`` environment
variables, overridden by the flags below (reconciler.settings). SIGTERM or SIGINT stops it:
no new connections, running requests and builds get ``shutdown_timeout`` seconds; a build
cut off there is run again on the next start.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from reconciler.settings import load_settings

LOG = logging.getLogger(__name__)

# Flag -> setting key; the flags are the common settings (the rest: config file or env).
FLAGS: tuple[tuple[str, str, str, str], ...] = (
    ("--listen", "listen", "HOST:PORT", "plain HTTP listener (default 0.0.0.0:8080)"),
    ("--tls-listen", "tls_listen", "HOST:PORT", "TLS listener (default 0.0.0.0:8443)"),
    ("--tls-cert", "tls_cert", "FILE", "TLS certificate chain (PEM); enables the TLS listener"),
    ("--tls-key", "tls_key", "FILE", "TLS private key (PEM)"),
    ("--public-url", "public_url", "URL", "HTTP base URL put into artifact and status URLs"),
    ("--public-tls-url", "public_tls_url", "URL", "HTTPS base URL (tlsArtifacts: true)"),
    ("--data-dir", "data_dir", "DIR", "build records, artifacts, checkins"),
    ("--images", "images", "DIR", "base artifacts: DIR/<arch>/<name>"),
    ("--workers", "workers", "N", "build worker threads"),
    ("--queue-length", "queue_length", "N", "builds waiting before POST answers 503"),
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the build / artifact / checkin HTTP service",
        description="The build / artifact / checkin HTTP service (docs/service.md).",
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="YAML settings file")
    for flag, key, metavar, text in FLAGS:
        parser.add_argument(flag, dest=key, metavar=metavar, help=text)
    parser.add_argument(
        "--trusted",
        dest="trusted",
        action="append",
        metavar="CIDR",
        help="trusted client network (repeatable; default 127.0.0.0/8 and ::1)",
    )
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from reconciler.web import services
    # One access-log line per request: skip the LogRecord fields nobody formats.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    flags = {key: getattr(args, key) for _, key, _, _ in FLAGS}
    flags["trusted"] = args.trusted
    settings = load_settings(args.config, os.environ, flags)

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        LOG.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    stop_service = services.start(settings)
    while not stop.wait(1.0):
        pass  # woken early by the signal handler; the timeout only keeps signals deliverable
    clean = stop_service()
    LOG.info("stopped%s", "" if clean else " (some work was cut off at the deadline)")
    if not clean:
        # Threads stuck in a download or a build must not keep the process alive.
        logging.shutdown()
        os._exit(0)
    return 0
