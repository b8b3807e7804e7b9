#!/usr/bin/env python3
"""Time the status page and the fleet API against the record they render.

    .venv/bin/python bench/status_page.py [--hosts 5000] [--runs 5] [--workdir DIR]

A state database of ``--hosts`` converged servers, three step runs of history each (what
``reconciler run`` leaves), then, median of ``--runs`` requests through Flask's test client
(no sockets: the handler's cost):

- baseline: ``statusview.status_record(data_dir)``, what ``reconciler status --json`` builds
  (the read of the state database every route does);
- GET /status (the HTML page), GET /api/v1/hosts (JSON), GET /status?condition=Stalled (a filter
  that keeps no row), GET /hosts/<one> and GET /api/v1/revision.

It prints each time with the baseline and the ratio, and the size of each answer. No goal was
set; docs/status.md quotes the figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler.adapters.statedb import StateDB  # noqa: E402
from reconciler.engine import statusview  # noqa: E402
from reconciler.plan import conditions  # noqa: E402
from reconciler.plan.status import HostStatus  # noqa: E402
from tests.fixtures.fleet_app import fleet_app  # noqa: E402

REVISION = "main@sha1:" + "a" * 40
STEPS = ("build", "check-bmc", "power-off")


def populate(data_dir: Path, count: int) -> None:
    db = StateDB(data_dir / "state.db")
    hosts = {}
    for i in range(count):
        name = f"node-{i:05d}"
        hosts[name] = conditions.ready(HostStatus(
            name, desired_state="provisioned", applied_state="provisioned",
            last_applied_revision=REVISION, last_attempted_revision=REVISION), "up to date")
    db.put_many(hosts)
    for st in hosts.values():
        for step in STEPS:
            run_id = db.begin_step(st.replace(workflow="provision", step=step), 1.0)
            db.end_step(run_id, st, 2.0, "ok", f"{step} done")
    db.set_fleet(lastFetched=REVISION, lastAttemptedRevision=REVISION,
                 lastAppliedRevision=REVISION, lastFetchedSubject="servers: bench")
    db.close()


def median(runs: int, fn: Callable[[], int]) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        size = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp, fleet_app(Path(tmp)) as api:
        populate(api.data_dir, args.hosts)
        base, _ = median(args.runs, lambda: len(statusview.status_record(api.data_dir)["hosts"]))
        print(f"{args.hosts} servers, {len(STEPS)} step runs each; median of {args.runs}")
        print(f"{'what':<34} {'ms':>8} {'baseline ms':>12} {'ratio':>6} {'bytes':>10}")
        print(f"{'status_record (baseline)':<34} {base * 1000:8.1f} {base * 1000:12.1f} "
              f"{1.0:6.2f} {'-':>10}")
        for path in ("/status", "/api/v1/hosts", "/status?condition=Stalled",
                     "/hosts/node-00042", "/api/v1/revision"):
            def get(path: str = path) -> int:
                response = api.client.get(path, environ_base={"REMOTE_ADDR": "127.0.0.1"})
                assert response.status_code == 200, response.status_code
                return len(response.get_data())

            took, size = median(args.runs, get)
            print(f"GET {path:<30} {took * 1000:8.1f} {base * 1000:12.1f} {took / base:6.2f} "
                  f"{size:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
