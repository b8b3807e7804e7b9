"""The floor of the stack: a bare WSGI hello-world on cheroot, configured like ``reconciler
serve`` (same thread count, keep-alive limit, gateway), with and without the access log line.

    .venv/bin/python bench/service_floor.py PORT [--log]

Run by bench/service_bench.py as the baseline below which no route of the service can go.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cheroot import wsgi  # noqa: E402

from reconciler.log import setup  # noqa: E402
from reconciler.web.http import log_access  # noqa: E402
from reconciler.web.server import KEEP_ALIVE_LIMIT, SendfileGateway  # noqa: E402

BODY = b"ok\n"
HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "3")]


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", HEADERS)
    return [BODY]


def logged(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    started = time.perf_counter()
    start_response("200 OK", HEADERS)
    log_access(environ["REQUEST_METHOD"], environ["PATH_INFO"], 200, started,
               environ.get("REMOTE_ADDR", "-"))  # fmt: skip
    return [BODY]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--log", action="store_true", help="log one line per request")
    parser.add_argument("--threads", type=int, default=32)
    args = parser.parse_args()
    setup(logging.INFO)
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    app = logged if args.log else hello
    server = wsgi.Server(("127.0.0.1", args.port), app, numthreads=args.threads,
                         max=args.threads, request_queue_size=128, timeout=30)  # fmt: skip
    server.gateway = SendfileGateway
    server.keep_alive_conn_limit = KEEP_ALIVE_LIMIT
    try:
        server.safe_start()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
