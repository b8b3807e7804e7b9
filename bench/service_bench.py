"""Benchmarks of ``reconciler serve`` on loopback, each beside a baseline from the same run.

    .venv/bin/python bench/service_bench.py            # all three
    .venv/bin/python bench/service_bench.py download   # or: latency, checkins

(a) latency:  POST /api/v1/builds of an already built request, 50 concurrent keep-alive
              clients (asyncio, in this process), each sending 10 requests a second; p50/p99
              counted from each request's due time. Then saturated: 50 connections back to
              back (wrk). Baselines measured the same way: GET /healthz, and the floor, a bare
              WSGI hello-world on cheroot (bench/service_floor.py). Goal p99 <= 10 ms.
(b) download: a 200 MB ISO built by the service, 16 concurrent curl clients each fetching
              50 x 4 MiB Range requests on keep-alive (what BMCs do), and 16 whole-file
              downloads; beside nginx (Debian nginx-light, sendfile, started here on loopback
              with its own config/pid/temp dirs and stopped after) serving the same file.
              Median of 3 runs each; server CPU seconds per GB too. Goal >= 0.8x nginx.
(c) checkins: PUT /api/v1/checkins/{id} per second, 16 keep-alive connections (wrk).
              Baselines: GET /healthz and the hello-world floor, same load. Goal >= 2,000/s.

Every part prints the load average: the load generator shares the machine's cores.
Needs wrk, curl, nginx (nginx-light) and the test kernel
(scripts/fetch-boot-tools.sh). Numbers depend on the machine: 2 shared cores here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from reconciler.artifacts.toolchain import boot_tools_dir  # noqa: E402
from tests.fixtures.service import (  # noqa: E402
    ServiceProcess,
    base_images,
    free_port,
    running_service,
)
from tests.fixtures.tiny_initramfs import tiny_initramfs  # noqa: E402

MiB = 1024 * 1024
ISO_TARGET = 200 * 1000 * 1000
REQUEST = {
    "kernel": "vmlinuz-amd64",
    "initramfs": "initramfs-amd64.img",
    "cmdline": "console=ttyS0",
    "architecture": "amd64",
}


def need(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if found is None:
        sys.exit(f"{tool} not found: apt-get install {package}")
    return found


def kernel() -> Path:
    path = boot_tools_dir() / "kernels" / "amd64" / "vmlinuz"
    if not path.is_file():
        sys.exit(f"no test kernel at {path}: run scripts/fetch-boot-tools.sh")
    return path


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (and their reaped children), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids = (task / "children").read_text().split()
        except FileNotFoundError:
            continue
        for kid in kids:
            found += children(int(kid))
    return found


def wait_completed(svc: ServiceProcess, build_id: str, timeout: float = 300) -> dict[str, Any]:
    status = svc.wait_build(build_id, timeout)
    if status["state"] != "completed":
        sys.exit(f"build {build_id} did not complete: {status}")
    return status


# --- load generators: wrk (saturated) and a paced asyncio client -------------------------

WRK_LUA = """\
wrk.method = "{method}"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, *, connections: int, seconds: int, method: str = "GET",
        body: bytes | None = None, work: Path) -> dict[str, float]:  # fmt: skip
    """Saturated: ``connections`` keep-alive connections back to back (Debian wrk, 2 threads);
    requests/s and latency percentiles in ms."""
    argv = [need("wrk", "wrk"), "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if body is not None:
        script = work / f"wrk-{method.lower()}.lua"
        script.write_text(WRK_LUA.format(method=method, body=lua_string(body)))
        argv += ["-s", str(script)]
    out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=seconds + 60,
                         check=True).stdout  # fmt: skip
    if "Non-2xx" in out or "Socket errors" in out:
        sys.exit(f"wrk saw failures against {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    found = {}
    for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        found[f"p{pct}"] = float(value) * _UNITS[unit]
    return {"rps": rps, **found}


def lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{b:03d}" for b in data) + '"'


async def _paced_client(host: str, port: int, request: bytes, *, start: float, period: float,
                        count: int, times: list[float]) -> None:  # fmt: skip
    """One keep-alive connection sending ``count`` requests at fixed times. Latency is counted
    from the time a request was due, not when it went out: a slow answer delays the next
    request, and that wait is part of what a paced client sees (no coordinated omission)."""
    reader, writer = await asyncio.open_connection(host, port)
    loop = asyncio.get_running_loop()
    try:
        for n in range(count):
            due = start + n * period
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            if length:
                await reader.readexactly(int(length.group(1)))
            if not status.startswith(b"2"):
                raise RuntimeError(f"answer {status.decode()}: {head[:200]!r}")
            times.append((loop.time() - due) * 1000)
    finally:
        writer.close()


def paced(url: str, *, clients: int, rate: float, seconds: float, method: str = "GET",
          body: bytes = b"") -> dict[str, float]:  # fmt: skip
    """``clients`` keep-alive connections, each sending ``rate`` requests a second for
    ``seconds`` (asyncio, one process; starts spread over one period); p50/p99 in ms."""
    match = re.match(r"http://([^:/]+):(\d+)(/.*)", url)
    assert match, url
    host, port, path = match.group(1), int(match.group(2)), match.group(3)
    request = (f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body  # fmt: skip
    period, count = 1.0 / rate, int(seconds * rate)
    times: list[float] = []

    async def run() -> None:
        start = asyncio.get_running_loop().time() + 0.2
        await asyncio.gather(*(
            _paced_client(host, port, request, start=start + n * period / clients,
                          period=period, count=count, times=times)
            for n in range(clients)
        ))  # fmt: skip

    started = time.monotonic()
    asyncio.run(run())
    elapsed = time.monotonic() - started
    cuts = statistics.quantiles(times, n=100)
    return {"p50": cuts[49], "p99": cuts[98], "rps": len(times) / elapsed}


@contextmanager
def floor_server(work: Path) -> Iterator[str]:
    """bench/service_floor.py: hello-world on cheroot with the service's settings and its
    access log line (to a file, like the service's)."""
    port = free_port()
    log = open(work / "floor.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "service_floor.py"), str(port),
                             "--log"], stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit("bench/service_floor.py did not start")
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (5 min {five:.2f})"


# --- (a) resubmitted-build POST latency ---------------------------------------------------


def bench_latency(svc: ServiceProcess, work: Path) -> None:
    body = json.dumps(REQUEST).encode()
    build_id = requests.post(f"{svc.url}/api/v1/builds", json=REQUEST).json()["id"]
    wait_completed(svc, build_id)
    builds, health = f"{svc.url}/api/v1/builds", f"{svc.url}/healthz"
    seconds = 10
    with floor_server(work) as floor:
        print(f"(a) resubmitted build POST /api/v1/builds, 50 keep-alive clients; {load()}")
        print("    paced: each client 10 requests/s (asyncio, latency from the due time)")
        wrk(builds, connections=50, seconds=2, method="POST", body=body, work=work)  # warm-up
        post = paced(builds, clients=50, rate=10, seconds=seconds, method="POST", body=body)
        base = paced(health, clients=50, rate=10, seconds=seconds)
        bare = paced(floor, clients=50, rate=10, seconds=seconds)
        print(f"      POST  p50 {post['p50']:.1f} ms  p99 {post['p99']:.1f} ms  "
              f"({post['rps']:.0f} req/s)   goal p99 <= 10 ms")  # fmt: skip
        print(f"      baseline GET /healthz  p50 {base['p50']:.1f} ms  p99 {base['p99']:.1f} ms")
        print(f"      floor: hello-world on cheroot  p50 {bare['p50']:.1f} ms  "
              f"p99 {bare['p99']:.1f} ms")  # fmt: skip
        print(f"      ratio p99 POST / p99 healthz: {post['p99'] / max(base['p99'], 0.1):.2f}; "
              f"POST / floor: {post['p99'] / max(bare['p99'], 0.1):.2f}   ({load()})")  # fmt: skip
        post = wrk(builds, connections=50, seconds=seconds, method="POST", body=body, work=work)
        base = wrk(health, connections=50, seconds=seconds, work=work)
        bare = wrk(floor, connections=50, seconds=seconds, work=work)
        print("    saturated: 50 connections back to back (wrk), so latency ~ 50 / throughput:")
        for label, r in (("POST", post), ("baseline GET /healthz", base),
                         ("floor: hello-world on cheroot", bare)):  # fmt: skip
            print(f"      {label}  p50 {r['p50']:.1f} ms  p99 {r['p99']:.1f} ms  "
                  f"({r['rps']:.0f} req/s)")  # fmt: skip
        print(f"      ratio p99 POST / p99 healthz: {post['p99'] / max(base['p99'], 0.1):.2f}; "
              f"req/s POST / floor: {post['rps'] / bare['rps']:.2f}   ({load()})")  # fmt: skip


# --- (c) checkin PUTs per second ----------------------------------------------------------


def bench_checkins(svc: ServiceProcess, work: Path) -> None:
    body = json.dumps({"addresses": ["198.18.0.150", "2001:db8::150"]}).encode()
    requests.post(f"{svc.url}/api/v1/checkins/bench-node", json={"addresses": []})
    url = f"{svc.url}/api/v1/checkins/bench-node"
    seconds = 10
    with floor_server(work) as floor:
        print(f"(c) checkin PUT, 16 keep-alive connections back to back (wrk); {load()}")
        wrk(url, connections=16, seconds=2, method="PUT", body=body, work=work)  # warm-up
        pids = children(svc.proc.pid)  # type: ignore[union-attr]
        cpu0 = cpu_seconds(pids)
        put = wrk(url, connections=16, seconds=seconds, method="PUT", body=body, work=work)
        cpu_put = (cpu_seconds(pids) - cpu0) / (put["rps"] * seconds) * 1e6
        health = wrk(f"{svc.url}/healthz", connections=16, seconds=seconds, work=work)
        bare = wrk(floor, connections=16, seconds=seconds, work=work)
    print(f"    PUT /api/v1/checkins/{{id}}  {put['rps']:.0f} req/s  (p99 {put['p99']:.1f} ms, "
          f"server CPU {cpu_put:.0f} us/request)   goal >= 2,000/s")  # fmt: skip
    print(f"    baseline GET /healthz  {health['rps']:.0f} req/s")
    print(f"    floor: hello-world on cheroot with the log line  {bare['rps']:.0f} req/s")
    print(f"    ratio PUT / healthz: {put['rps'] / health['rps']:.2f}; "
          f"PUT / floor: {put['rps'] / bare['rps']:.2f}   ({load()})")  # fmt: skip


# --- (b) downloads beside nginx -----------------------------------------------------------


NGINX_CONF = """\
user root;
worker_processes auto;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    default_type application/octet-stream;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


@contextmanager
def nginx(root: Path, work: Path) -> Iterator[tuple[str, int]]:
    binary = need("nginx", "nginx-light")
    d = work / "nginx"
    d.mkdir()
    port = free_port()
    conf = d / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=d, port=port, root=root))
    proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(d)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                requests.head(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"nginx did not start: {proc.stderr.read()!r}")  # type: ignore[union-attr]
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGQUIT)  # graceful stop of master and workers
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def curl_clients(url: str, size: int, *, clients: int, ranges: int, chunk: int,
                 work: Path) -> float:  # fmt: skip
    """Seconds for ``clients`` curl processes to fetch their ranges (or the whole file)."""
    configs = []
    for c in range(clients):
        lines = []
        if ranges:
            for r in range(ranges):
                start = ((c * ranges + r) * chunk) % (size - chunk)
                lines.append(f'url = "{url}"\nrange = "{start}-{start + chunk - 1}"\n'
                             'output = "/dev/null"\n')  # fmt: skip
        else:
            lines.append(f'url = "{url}"\noutput = "/dev/null"\n')
        config = work / f"curl-{c}.cfg"
        config.write_text("".join(lines))
        configs.append(config)
    started = time.monotonic()
    procs = [subprocess.Popen(["curl", "-sSf", "-K", str(cfg)]) for cfg in configs]
    codes = [p.wait(600) for p in procs]
    elapsed = time.monotonic() - started
    if any(codes):
        sys.exit(f"curl failed against {url}: exit codes {codes}")
    return elapsed


def bench_download(svc: ServiceProcess, work: Path, initramfs: Path) -> None:
    need("curl", "curl")
    body = dict(REQUEST, initramfs="big-initramfs.img")
    build_id = requests.post(f"{svc.url}/api/v1/builds", json=body).json()["id"]
    status = wait_completed(svc, build_id)
    iso_url = status["artifacts"]["isoUrl"]
    build_dir = svc.data_dir / "builds" / build_id
    iso = build_dir / "boot.iso"
    size = iso.stat().st_size
    subprocess.run(["cat", str(iso)], stdout=subprocess.DEVNULL, check=True)  # page cache
    svc_pids = children(svc.proc.pid)  # type: ignore[union-attr]
    clients, ranges, chunk = 16, 50, 4 * MiB
    results: dict[str, dict[str, list[float]]] = {}
    with nginx(build_dir, work) as (nginx_base, nginx_pid):
        nginx_pids = children(nginx_pid)
        targets: dict[str, tuple[str, list[int]]] = {
            "reconciler": (iso_url, svc_pids),
            "nginx": (f"{nginx_base}/boot.iso", nginx_pids),
        }
        kinds: dict[str, Callable[[str], float]] = {
            "range": lambda u: curl_clients(u, size, clients=clients, ranges=ranges,
                                            chunk=chunk, work=work),  # fmt: skip
            "whole": lambda u: curl_clients(u, size, clients=clients, ranges=0, chunk=0,
                                            work=work),  # fmt: skip
        }
        volume = {"range": clients * ranges * chunk, "whole": clients * size}
        for kind, run in kinds.items():
            for url, _ in targets.values():
                run(url)  # warm-up (connections, page cache)
            for _ in range(3):  # alternate the servers so drift hits both
                for name, (url, pids) in targets.items():
                    cpu0 = cpu_seconds(pids)
                    seconds = run(url)
                    cpu = cpu_seconds(pids) - cpu0
                    entry = results.setdefault(f"{kind}/{name}", {"gbps": [], "cpu": []})
                    entry["gbps"].append(volume[kind] / seconds / 1e9)
                    entry["cpu"].append(cpu / (volume[kind] / 1e9))
    print(f"(b) download of a {size / 1e6:.0f} MB ISO built by the service, loopback, page cache, "
          "median of 3")  # fmt: skip
    for kind, label in (("range", f"{clients} clients x {ranges} x {chunk // MiB} MiB Range"),
                        ("whole", f"{clients} clients x whole file")):  # fmt: skip
        ours = results[f"{kind}/reconciler"]
        base = results[f"{kind}/nginx"]
        ours_gbps, base_gbps = statistics.median(ours["gbps"]), statistics.median(base["gbps"])
        print(f"    {label}:")
        print(f"      reconciler serve  {ours_gbps:.2f} GB/s  "
              f"CPU {statistics.median(ours['cpu']):.2f} s/GB")  # fmt: skip
        print(f"      nginx (baseline)  {base_gbps:.2f} GB/s  "
              f"CPU {statistics.median(base['cpu']):.2f} s/GB")  # fmt: skip
        goal = "   goal >= 0.8" if kind == "range" else ""
        print(f"      ratio reconciler / nginx: {ours_gbps / base_gbps:.2f}{goal}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parts = ["latency", "download", "checkins"]
    parser.add_argument("which", nargs="*", help=f"any of {', '.join(parts)} (default: all)")
    which = parser.parse_args().which or parts
    if unknown := set(which) - set(parts):
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="service-bench-") as tmp:
        work = Path(tmp)
        images = base_images(work / "images", "amd64", kernel=kernel(),
                             initramfs=tiny_initramfs("amd64", work / "tiny.img"))  # fmt: skip
        big = work / "big-initramfs.img"
        if "download" in which:
            # Random bytes, so the ISO is as big on disk as it says.
            with open(big, "wb") as f:
                for _ in range(ISO_TARGET // (8 * MiB)):
                    f.write(os.urandom(8 * MiB))
            (images / "amd64" / "big-initramfs.img").symlink_to(big)
        with running_service(work / "svc", images=images) as svc:
            print(f"reconciler serve on {svc.url}; {os.cpu_count()} CPUs; "
                  f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
            if "latency" in which:
                bench_latency(svc, work)
            if "download" in which:
                bench_download(svc, work, big)
            if "checkins" in which:
                bench_checkins(svc, work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
