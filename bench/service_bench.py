"""Benchmarks of ``reconciler serve`` on loopback, each beside a baseline from the same run.

    .venv/bin/python bench/service_bench.py            # all three
    .venv/bin/python bench/service_bench.py download   # or: latency, checkins

(a) latency:  POST /api/v1/builds of an already built request, 50 concurrent keep-alive
              clients (curl), each sending 10 requests a second; p50/p99. Then saturated: 50
              clients back to back (ab). Baseline: GET /healthz measured the same way (the
              floor of cheroot + Flask). Goal p99 <= 10 ms.
(b) download: a 200 MB ISO built by the service, 16 concurrent curl clients each fetching
              50 x 4 MiB Range requests on keep-alive (what BMCs do), and 16 whole-file
              downloads; beside nginx (Debian nginx-light, sendfile, started here on loopback
              with its own config/pid/temp dirs and stopped after) serving the same file.
              Median of 3 runs each; server CPU seconds per GB too. Goal >= 0.8x nginx.
(c) checkins: PUT /api/v1/checkins/{id} per second, 16 keep-alive clients (ab). Baseline:
              GET /healthz per second with the same clients. Goal >= 2,000 PUT/s.

Needs ab (apache2-utils), curl, nginx (nginx-light) and the test kernel
(scripts/fetch-boot-tools.sh). Numbers depend on the machine: 2 shared cores here.
"""

from __future__ import annotations

import argparse
import csv
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


def wait_completed(svc: ServiceProcess, build_id: str, timeout: float = 300) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, object] = requests.get(f"{svc.url}/api/v1/builds/{build_id}").json()
        if status["state"] in ("completed", "failed"):
            assert status["state"] == "completed", status
            return status
        if time.monotonic() > deadline:
            sys.exit(f"build {build_id} did not complete: {status}")
        time.sleep(0.1)


# --- ab (ApacheBench) --------------------------------------------------------------------


def ab(url: str, *, concurrency: int, requests_: int, method: str = "GET",
       body: Path | None = None, workdir: Path) -> dict[str, float]:  # fmt: skip
    """Run ab with keep-alive; requests/s and latency percentiles (ms, from ab's -e table)."""
    table = workdir / "ab-percentiles.csv"
    argv = [need("ab", "apache2-utils"), "-q", "-k", "-r", "-c", str(concurrency),
            "-n", str(requests_), "-e", str(table)]  # fmt: skip
    if method == "POST":
        argv += ["-p", str(body), "-T", "application/json"]
    elif method == "PUT":
        argv += ["-u", str(body), "-T", "application/json"]
    out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=600, check=True)
    text = out.stdout
    failed = int(re.search(r"Failed requests:\s+(\d+)", text).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", text)
    if failed or non2xx:
        sys.exit(f"ab saw failures against {url}:\n{text}")
    rps = float(re.search(r"Requests per second:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    percentiles = {}
    with open(table) as f:
        for row in csv.reader(f):
            if row[0].replace(".", "").isdigit():
                percentiles[int(float(row[0]))] = float(row[1])
    return {"rps": rps, "p50": percentiles[50], "p99": percentiles[99]}


# --- (a) resubmitted-build POST latency ---------------------------------------------------


def paced_clients(url: str, *, clients: int, each: int, rate: str, body: Path | None,
                  work: Path) -> dict[str, float]:  # fmt: skip
    """``clients`` curl processes, each sending ``each`` requests at ``rate`` on one
    keep-alive connection; the latency of every request as curl measured it."""
    config = work / "paced.cfg"
    config.write_text(f'url = "{url}"\noutput = "/dev/null"\n' * each)
    argv = ["curl", "-sS", "--rate", rate, "-K", str(config),
            "-w", "%{http_code} %{time_total}\n"]  # fmt: skip
    if body is not None:
        argv += ["-H", "Content-Type: application/json", "--data-binary", f"@{body}"]
    started = time.monotonic()
    # Independent clients: spread their starts over one period instead of firing in lockstep
    # (all 50 at the same instant every 100 ms is a burst, not 50 clients).
    period = 1.0 / float(rate.split("/")[0])
    procs = []
    for n in range(clients):
        time.sleep(max(0.0, started + n * period / clients - time.monotonic()))
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True))
    times: list[float] = []
    failures = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        for line in out.split("\n"):
            if line:
                code, seconds = line.split()
                if code.startswith("2"):
                    times.append(float(seconds) * 1000)
                else:
                    failures += 1
    elapsed = time.monotonic() - started
    if failures:
        sys.exit(f"{url}: {failures} of {clients * each} requests failed")
    cuts = statistics.quantiles(times, n=100)
    return {"p50": cuts[49], "p99": cuts[98], "rps": len(times) / elapsed}


def bench_latency(svc: ServiceProcess, work: Path) -> None:
    body = work / "build.json"
    body.write_text(json.dumps(REQUEST))
    build_id = requests.post(f"{svc.url}/api/v1/builds", json=REQUEST).json()["id"]
    wait_completed(svc, build_id)
    builds, health = f"{svc.url}/api/v1/builds", f"{svc.url}/healthz"
    paced = {"clients": 50, "each": 100, "rate": "10/s", "work": work}
    post = paced_clients(builds, body=body, **paced)  # type: ignore[arg-type]
    base = paced_clients(health, body=None, **paced)  # type: ignore[arg-type]
    print("(a) resubmitted build POST /api/v1/builds, 50 concurrent keep-alive clients "
          "(curl), each 10 requests/s, starts spread over 100 ms")  # fmt: skip
    print(f"    POST  p50 {post['p50']:.1f} ms  p99 {post['p99']:.1f} ms  "
          f"({post['rps']:.0f} req/s)   goal p99 <= 10 ms")  # fmt: skip
    print(f"    baseline GET /healthz  p50 {base['p50']:.1f} ms  p99 {base['p99']:.1f} ms")
    print(f"    ratio p99 POST / p99 healthz: {post['p99'] / max(base['p99'], 0.1):.2f}")
    n = 10_000
    ab(builds, concurrency=50, requests_=1000, method="POST", body=body, workdir=work)  # warm
    post = ab(builds, concurrency=50, requests_=n, method="POST", body=body, workdir=work)
    base = ab(health, concurrency=50, requests_=n, workdir=work)
    print("    saturated: 50 clients back to back (ab -k -c 50), so latency = 50 / throughput:")
    print(f"    POST  p50 {post['p50']:.1f} ms  p99 {post['p99']:.1f} ms  "
          f"({post['rps']:.0f} req/s)")  # fmt: skip
    print(f"    baseline GET /healthz  p50 {base['p50']:.1f} ms  p99 {base['p99']:.1f} ms  "
          f"({base['rps']:.0f} req/s)")  # fmt: skip
    print(f"    ratio p99 POST / p99 healthz: {post['p99'] / max(base['p99'], 0.1):.2f}")


# --- (c) checkin PUTs per second ----------------------------------------------------------


def bench_checkins(svc: ServiceProcess, work: Path) -> None:
    body = work / "checkin.json"
    body.write_text(json.dumps({"addresses": ["198.18.0.150", "2001:db8::150"]}))
    requests.post(f"{svc.url}/api/v1/checkins/bench-node", json={"addresses": []})
    url = f"{svc.url}/api/v1/checkins/bench-node"
    n = 20_000
    ab(url, concurrency=16, requests_=2000, method="PUT", body=body, workdir=work)  # warm-up
    pids = children(svc.proc.pid)  # type: ignore[union-attr]
    cpu0 = cpu_seconds(pids)
    put = ab(url, concurrency=16, requests_=n, method="PUT", body=body, workdir=work)
    cpu_put = (cpu_seconds(pids) - cpu0) / n * 1e6
    health = ab(f"{svc.url}/healthz", concurrency=16, requests_=n, workdir=work)
    print(f"(c) checkin PUT, 16 concurrent keep-alive clients, {n} requests (ab)")
    print(f"    PUT /api/v1/checkins/{{id}}  {put['rps']:.0f} req/s  (p99 {put['p99']:.1f} ms, "
          f"server CPU {cpu_put:.0f} us/request)   goal >= 2,000/s")  # fmt: skip
    print(f"    baseline GET /healthz  {health['rps']:.0f} req/s")
    print(f"    ratio PUT / healthz: {put['rps'] / health['rps']:.2f}")


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
    iso_url = status["artifacts"]["isoUrl"]  # type: ignore[index]
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
            "reconciler": (iso_url, svc_pids),  # type: ignore[dict-item]
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
