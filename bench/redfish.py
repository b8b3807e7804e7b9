#!/usr/bin/env python3
"""Redfish driver benchmark: one sushy-tools emulator hosting 1,000 systems, N hosts at once.

Each simulated host runs the provisioning preparation the reconciler does per server:

    status, insert_cd (eject all, insert, verify), set_boot Cd Once, power_on,
    eject_all_media, clear_boot_override (Hdd Continuous), inventory

against its own System (given by id, so the 1,000-member collection is never listed).
Power waits are left out on purpose: the fake driver lands transitions 1-11 s later at
random, which would measure its sleep, not the driver.

Printed: Redfish requests and wall time per operation (median, p95), requests/s overall, and
CPU per operation of the reconciler process (time.process_time: all client threads) versus
the emulator's gunicorn master and workers (/proc/PID/stat), and their ratio. The image
server InsertMedia downloads from runs in a separate process so its CPU counts for neither.

    .venv/bin/python bench/redfish.py [--systems 1000] [--hosts 200] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.adapters.redfish import (  # noqa: E402
    Bmc,
    BmcEndpoint,
    BootEnabled,
    BootTarget,
    ClientSettings,
)
from tests.fixtures.redfish_emulator import RedfishEmulator, free_port  # noqa: E402

Sample = tuple[str, float, int]  # operation, seconds, requests


def run_host(emu: RedfishEmulator, system_id: str, iso: str, keep_alive: bool) -> list[Sample]:
    user, pw = emu.credentials
    settings = ClientSettings(keep_alive=keep_alive, read_timeout=60.0)
    samples: list[Sample] = []
    with Bmc(BmcEndpoint(emu.url, user, pw, system_id=system_id), settings) as bmc:
        steps: list[tuple[str, Callable[[], object]]] = [
            ("connect+status", bmc.status),
            ("insert_cd", lambda: bmc.insert_cd(iso)),
            ("set_boot cd", lambda: bmc.set_boot(BootTarget.CD, BootEnabled.ONCE)),
            ("power_on", bmc.power_on),
            ("eject_all_media", bmc.eject_all_media),
            ("clear_boot_override", bmc.clear_boot_override),
            ("inventory", bmc.inventory),
        ]
        for name, step in steps:
            before, started = bmc.requests_sent, time.perf_counter()
            step()
            samples.append((name, time.perf_counter() - started, bmc.requests_sent - before))
    return samples


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=200, help="hosts to run the sequence on")
    parser.add_argument("--concurrency", type=int, default=16, help="hosts at once (N)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument("--keep-alive", action="store_true",
                        help="reuse connections (default: Connection: close, as for real BMCs)")
    args = parser.parse_args()
    if not 0 < args.hosts <= args.systems:
        parser.error("--hosts must be between 1 and --systems")
    logging.basicConfig(level=logging.WARNING)
    # The fake driver always reads back Continuous after "Once": one warning per host.
    logging.getLogger("reconciler.adapters.redfish.driver").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory(prefix="bench-redfish-") as tmp:
        (Path(tmp) / "boot.iso").write_bytes(b"\0" * 65536)
        port = free_port()
        images = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port),
             "--directory", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            iso = f"http://127.0.0.1:{port}/boot.iso"
            deadline = time.monotonic() + 10
            while True:
                try:
                    requests.head(iso, timeout=1)
                    break
                except requests.RequestException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            started = time.perf_counter()
            with RedfishEmulator(systems=args.systems, workers=args.workers,
                                 threads=args.threads, start_timeout=120) as emu:
                boot = time.perf_counter() - started
                # Warm every worker (each loads the 1,000 systems on its first request).
                with requests.Session() as session:
                    for i in range(4 * args.workers):
                        session.get(f"{emu.url}/redfish/v1/Systems/{emu.system_ids[i]}",
                                    auth=emu.credentials, timeout=60)
                emu_cpu0, own_cpu0 = emu.cpu_seconds(), time.process_time()
                wall0 = time.perf_counter()
                with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                    futures = [
                        pool.submit(run_host, emu, emu.system_ids[i], iso, args.keep_alive)
                        for i in range(args.hosts)
                    ]
                    results = [f.result() for f in futures]
                wall = time.perf_counter() - wall0
                own_cpu = time.process_time() - own_cpu0
                emu_cpu = emu.cpu_seconds() - emu_cpu0
        finally:
            images.terminate()
            images.wait(timeout=10)

    by_op: dict[str, list[Sample]] = defaultdict(list)
    for host in results:
        for sample in host:
            by_op[sample[0]].append(sample)
    total_requests = sum(s[2] for host in results for s in host)
    operations = sum(len(host) for host in results)

    print(f"emulator: {args.systems} systems, gunicorn {args.workers} workers x "
          f"{args.threads} threads, started in {boot:.1f}s; hosts {args.hosts}, "
          f"concurrency {args.concurrency}, keep-alive {'on' if args.keep_alive else 'off'}")
    print(f"{'operation':<22}{'count':>6}{'req/op':>8}{'median ms':>11}{'p95 ms':>9}")
    for name, samples in by_op.items():
        times = [s[1] * 1000 for s in samples]
        reqs = statistics.mean(s[2] for s in samples)
        print(f"{name:<22}{len(samples):>6}{reqs:>8.1f}{statistics.median(times):>11.1f}"
              f"{p95(times):>9.1f}")
    per_host = [sum(s[1] for s in host) for host in results]
    print(f"sequence per host: median {statistics.median(per_host):.2f}s, "
          f"p95 {p95(per_host):.2f}s, {total_requests / len(results):.1f} requests")
    print(f"total: {total_requests} requests in {wall:.2f}s = {total_requests / wall:.0f} req/s, "
          f"{operations / wall:.1f} operations/s")
    own_ms, emu_ms = own_cpu * 1000 / operations, emu_cpu * 1000 / operations
    print(f"CPU per operation: reconciler {own_ms:.2f} ms (baseline: emulator {emu_ms:.2f} ms); "
          f"ratio reconciler/emulator = {own_ms / emu_ms:.2f}")
    print(f"CPU per request:   reconciler {own_cpu * 1000 / total_requests:.2f} ms, "
          f"emulator {emu_cpu * 1000 / total_requests:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
