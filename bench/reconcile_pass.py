"""Benchmark: one idle reconcile pass over a converged fleet (issue 13, "Numbers", first item).

A pass is :meth:`reconciler.engine.loop.Reconciler.tick` as ``reconciler run`` calls it: fetch
the branch (unchanged) through :class:`GitSource` from a real bare repository on local disk,
observe every server's power through the real :class:`Executor` (its thread pool, one
:class:`FakeBmc` per server, each powered as its desired state says), plan, fold status. The
state database is pre-filled with the fleet as converged (:func:`as_applied`), so every server
is "up to date" and nothing is started; the bench checks that every pass decides nothing.
The fleet is bench/inventory.py's generator in /16 subnets, one server in five ``state: off``.

The first pass after start parses the revision (snapshot from git, validate, IPAM, digests) and
folds ``Ready`` into every record; it is printed apart from the steady idle passes.

Printed side by side, measured in the same run and interleaved with the passes (the machine is
shared): baseline A, ``parse_inventory`` + ``desired_hosts`` of the same files (the floor a pass
that re-validated the revision would pay); baseline B, ``plan(...)`` alone on the decoded state.
Ratios pass / baseline. CPU is ``time.process_time`` (every thread of this process); git's own
CPU (child processes) is printed apart. Goal: at most 2 s CPU per idle pass. The parts of a
pass (fetch, ``StateDB.hosts``, ``Executor.observe``, ``plan``) are also timed alone.

Memory: peak RSS (``ru_maxrss``), the RSS at each stage, and tracemalloc's count of what the
parsed revision keeps and what one idle pass allocates at its peak. The fakes' share is printed
apart: ``run`` holds a Redfish client per server instead.

    .venv/bin/python bench/reconcile_pass.py [--servers 5000] [--passes 5] [--profile]

``--profile``: one more idle pass under cProfile, the event loop's thread and every Redfish
pool thread (one profiler each, CPU time per thread), merged; prints the top functions. The
profiler makes the pass ~4x slower and inflates small calls: the parts timed alone are the
truer split (py-spy ``record --gil`` attached to the pass agrees with them).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.inventory import generate  # noqa: E402
from reconciler.adapters.redfish.fake import RECORDINGS, FakeBmc  # noqa: E402
from reconciler.adapters.statedb import StateDB  # noqa: E402
from reconciler.engine.executor import Executor, Limits  # noqa: E402
from reconciler.engine.loop import Desired, Reconciler, desired_of  # noqa: E402
from reconciler.engine.source import GitSource  # noqa: E402
from reconciler.model import desired_hosts, parse_inventory  # noqa: E402
from reconciler.model.desired import DesiredHost  # noqa: E402
from reconciler.model.policy import Policy  # noqa: E402
from reconciler.plan.decide import Action, Kind, as_applied, plan  # noqa: E402
from reconciler.render.renderer import RenderSettings  # noqa: E402

T = TypeVar("T")
BRANCH = "main"
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example",
           "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}
STATIC = re.compile(rb"address: 10\.\d+\.(\d+)\.(\d+)")
SUBNET = re.compile(rb"subnet: dc(\d+)")


# --- the fleet --------------------------------------------------------------------------------


def fleet_files(count: int) -> dict[str, bytes]:
    """bench/inventory.py's generator, moved into /16 subnets (10.<n>.0.0/16, ~800 servers
    each: IPAM has room) and with one server in five ``state: off``. Static addresses keep
    their last two octets, so they stay distinct within their subnet."""
    files = generate(count)
    subnets = sorted({int(m) for d in files.values() for m in SUBNET.findall(d)})
    lines = ["subnets:"]
    for s in subnets:
        lines += [f"  dc{s}:", f"    cidr: 10.{s}.0.0/16", f"    gateway: 10.{s}.0.1",
                  f"    dns: [10.{s}.0.1]", "    reserved:",
                  f"      - start: 10.{s}.255.200", f"        end: 10.{s}.255.250",
                  "        reason: dhcp"]
    files["subnets.yaml"] = ("\n".join(lines) + "\n").encode()
    for index, path in enumerate(sorted(p for p in files if p.startswith("servers/"))):
        data = files[path]
        match = SUBNET.search(data)
        assert match is not None
        prefix = b"address: 10.%s." % match.group(1)
        data = STATIC.sub(prefix + rb"\1.\2", data)
        if index % 5 == 4:
            data = data.replace(b"state: provisioned", b"state: \"off\"", 1)
        files[path] = data
    return files


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True,
                          capture_output=True, text=True).stdout


def make_remote(root: Path, files: dict[str, bytes]) -> Path:
    """A bare repository with the fleet in two commits: servers with static addresses first
    (senior in IPAM, as a fleet that pinned addresses before turning IPAM on), then the rest."""
    work = root / "work"
    work.mkdir()
    git("init", "-q", "-b", BRANCH, cwd=work)
    static = {p for p, d in files.items() if STATIC.search(d)}
    for message, paths in (("servers with static addresses", static),
                           ("the rest of the fleet", set(files) - static)):
        for rel in paths:
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).write_bytes(files[rel])
        git("add", "-A", ".", cwd=work)
        git("commit", "-q", "-m", message, cwd=work)
    remote = root / "inventory.git"
    git("clone", "-q", "--bare", str(work), str(remote), cwd=root)
    return remote


class IdleBuilds:
    """The build client's interface; an idle pass never builds."""

    def submit(self, request: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("an idle pass submitted a build")

    def build(self, build_id: str) -> dict[str, Any] | None:
        raise AssertionError("an idle pass polled a build")


def make_fakes(hosts: dict[str, DesiredHost]) -> dict[str, FakeBmc]:
    """One FakeBmc per server (the recorded sushy-tools System), powered as desired."""
    docs = json.loads((RECORDINGS / "emulator.json").read_text())
    fakes = {}
    for name, host in hosts.items():
        fake = FakeBmc(docs, name=host.bmc.url)
        fake.system["Id"] = host.bmc.system_id
        fake.system["PowerState"] = "On" if host.state == "provisioned" else "Off"
        fakes[name] = fake
    return fakes


# --- measuring -------------------------------------------------------------------------------


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class Sample:
    def __init__(self, wall: float, cpu: float, git_cpu: float) -> None:
        self.wall, self.cpu, self.git_cpu = wall, cpu, git_cpu


def measure(fn: Callable[[], T]) -> tuple[T, Sample]:
    wall, cpu, child = time.perf_counter(), time.process_time(), children_cpu()
    value = fn()
    return value, Sample(time.perf_counter() - wall, time.process_time() - cpu,
                         children_cpu() - child)


async def ameasure(coro: Any) -> tuple[Any, Sample]:
    wall, cpu, child = time.perf_counter(), time.process_time(), children_cpu()
    value = await coro
    return value, Sample(time.perf_counter() - wall, time.process_time() - cpu,
                         children_cpu() - child)


def check_idle(actions: list[Action], servers: int) -> None:
    busy = [a for a in actions if a.kind != Kind.NONE or a.hold is not None
            or not a.message.endswith("up to date")]
    if len(actions) != servers or busy:
        raise SystemExit(f"not an idle pass: {len(actions)} actions, e.g. {busy[:3]}")


def med(samples: list[Sample], attr: str) -> float:
    return float(statistics.median(getattr(s, attr) for s in samples))


# --- profiling -------------------------------------------------------------------------------


class ThreadProfiles:
    """cProfile in the calling thread and in every thread of a pool this makes (cProfile sees
    one thread only): ``pool()`` replaces the executor's Redfish pool for the profiled pass."""

    def __init__(self, workers: int, timer: Callable[[], float] | None) -> None:
        self.workers = workers
        self.timer = timer
        self.profiles: dict[int, cProfile.Profile] = {}
        self._lock = threading.Lock()

    def _start(self) -> None:
        prof = cProfile.Profile(self.timer) if self.timer else cProfile.Profile()
        with self._lock:
            self.profiles[threading.get_ident()] = prof
        prof.enable()

    def pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(self.workers, thread_name_prefix="redfish",
                                  initializer=self._start)

    def stop(self, pool: ThreadPoolExecutor) -> None:
        """Each pool thread disables its own profiler: one task per thread, held at a barrier
        until every thread has one."""
        count = len(self.profiles)
        barrier = threading.Barrier(count)

        def off() -> None:
            barrier.wait(timeout=10)
            self.profiles[threading.get_ident()].disable()

        for f in [pool.submit(off) for _ in range(count)]:
            f.result()
        pool.shutdown()


# Event-loop plumbing that wraps everything run on the loop: left out of the tables.
PLUMBING = {("base_events.py", "_run_once"), ("events.py", "_run"), ("thread.py", "_worker"),
            ("~", "<method 'run' of '_contextvars.Context' objects>"),
            ("reconcile_pass.py", "bench"), ("reconcile_pass.py", "ameasure")}


def top(stats: pstats.Stats, column: int, count: int) -> str:
    """The ``count`` functions with the most cumulative (column 3) or own (column 2) time, as
    a share of all the CPU the profilers saw. Coroutines count one call per resumption."""
    table: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = \
        stats.stats  # type: ignore[attr-defined]
    seen = sum(v[2] for v in table.values())
    rows = sorted(((k, v) for k, v in table.items() if (k[0], k[2]) not in PLUMBING),
                  key=lambda kv: kv[1][column], reverse=True)[:count]
    lines = [f"  {'calls':>8s} {'own':>8s} {'cum':>8s} {'cum %':>6s}  function"]
    for (file, line, func), (_cc, calls, own, cum, _) in rows:
        lines.append(f"  {calls:8d} {own:7.3f}s {cum:7.3f}s {100 * cum / seen:5.1f}%  "
                     f"{file}:{line}({func})")
    return "\n".join(lines)


# --- the run ---------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, root: Path) -> int:
    load = os.getloadavg()
    rss: dict[str, float] = {"imports": rss_mib()}
    files, made = measure(lambda: fleet_files(args.servers))
    remote, made_git = measure(lambda: make_remote(root, files))
    print(f"fleet: {args.servers} servers generated in {made.wall:.2f} s, bare repository "
          f"({remote}) in {made_git.wall:.2f} s (not timed below)")

    data = root / "data"
    source = GitSource(str(remote), BRANCH, "", data / "repo", timeout=120)
    fetched = source.fetch()  # the clone: made once, before the process being measured starts
    snap = source.snapshot(fetched.commit)
    inventory, problems = parse_inventory(snap.files, seniority=snap.seniority)
    desired = desired_of(inventory, problems, Desired(), fetched)
    if desired.problems or desired.invalid or len(desired.hosts) != args.servers:
        raise SystemExit(f"the generated fleet has problems: {list(desired.problems)[:5]}")
    hosts = desired.hosts
    if len({h.bmc.system_id for h in hosts.values()}) != len(hosts):
        raise SystemExit("two servers share a BMC system id")
    states = Counter(h.state for h in hosts.values())
    status, observed = as_applied(hosts)
    db = StateDB(data / "state.db")
    db.put_many(status)
    del inventory, desired, problems
    rss["state db filled"] = rss_mib()
    fakes = make_fakes(hosts)
    rss["+ 5,000 FakeBmc" if args.servers == 5000 else "+ FakeBmc"] = rss_mib()
    print(f"states: {dict(sorted(states.items()))}, {len(hosts)} distinct BMC system ids; "
          f"{len(snap.files)} files; state db and clone under {data}")

    limits = Limits()
    executor = Executor(db, bmc_factory=lambda h: fakes[h.name],
                        build=IdleBuilds(),  # type: ignore[arg-type]
                        render=lambda h, k, p, i: None,  # type: ignore[arg-type,return-value]
                        client_key=asyncssh.generate_private_key("ssh-ed25519"),
                        limits=limits)
    settings = RenderSettings(ssh_keys=("ssh-ed25519 AAAA reconciler",))

    def parse_baseline() -> int:
        inv, _ = parse_inventory(snap.files, seniority=snap.seniority)
        return len(desired_hosts(inv))

    plan_status = db.hosts()

    def plan_baseline() -> int:
        return len(plan(hosts, observed, plan_status, Policy(), time.time()))

    def forget_calls() -> None:  # FakeBmc logs every call: not the engine's memory
        for fake in fakes.values():
            fake.calls.clear()

    base_parse: list[Sample] = []
    base_plan: list[Sample] = []
    parts: dict[str, list[Sample]] = {"fetch": [], "hosts": [], "observe": []}
    _, s = measure(parse_baseline)
    base_parse.append(s)
    rec = Reconciler(source, executor, settings)
    actions, first = await ameasure(rec.tick())
    check_idle(actions, args.servers)
    forget_calls()
    rss["after the first pass"] = rss_mib()
    steady: list[Sample] = []
    for _ in range(args.passes):
        actions, s = await ameasure(rec.tick())
        check_idle(actions, args.servers)
        steady.append(s)
        forget_calls()
        base_parse.append(measure(parse_baseline)[1])
        base_plan.append(measure(plan_baseline)[1])
        # The parts of a pass, each alone on the same state (the rest is the status fold).
        parts["fetch"].append(measure(source.fetch)[1])
        parts["hosts"].append(measure(db.hosts)[1])
        parts["observe"].append((await ameasure(executor.observe(hosts)))[1])
        forget_calls()
    rss["after the idle passes"] = rss_mib()
    if executor.tasks:
        raise SystemExit("an idle pass started a workflow")
    # The first pass's own parts, once each.
    first_parts = {
        "snapshot (git ls-tree + cat-file --batch + log)":
            measure(lambda: source.snapshot(fetched.commit))[1],
        "put_many of every record (Ready folded in)":
            measure(lambda: db.put_many(db.hosts()))[1],
    }

    # What the parsed revision keeps, and what one idle pass allocates at its peak
    # (tracemalloc slows the process: not part of the timings above).
    del rec
    tracemalloc.start()
    rec = Reconciler(source, executor, settings)
    check_idle(await rec.tick(), args.servers)
    first_peak = tracemalloc.get_traced_memory()[1]
    forget_calls()
    kept = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    before, _ = tracemalloc.get_traced_memory()
    check_idle(await rec.tick(), args.servers)
    idle_peak = tracemalloc.get_traced_memory()[1]
    forget_calls()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()

    profile_text = ""
    if args.profile:
        timer = time.thread_time if args.profile_clock == "cpu" else None
        profiles = ThreadProfiles(limits.redfish_threads, timer)
        old_pool = executor._pool
        executor._pool = profiles.pool()
        main = cProfile.Profile(timer) if timer else cProfile.Profile()
        main.enable()
        actions, profiled = await ameasure(rec.tick())
        main.disable()
        check_idle(actions, args.servers)
        profiles.stop(executor._pool)
        executor._pool = old_pool
        stats = pstats.Stats(main)
        for prof in profiles.profiles.values():
            stats.add(prof)
        stats.strip_dirs()
        clock = "CPU time of each thread" if timer else "wall time of each thread"
        profile_text = (
            f"\nprofile of one idle pass ({clock}; the event loop's thread + "
            f"{len(profiles.profiles)} Redfish pool threads, merged; the pass took "
            f"{profiled.cpu:.2f} s cpu under the profiler: its overhead inflates many small "
            "calls, the parts measured alone above are the truer split)\n"
            f"-- by cumulative time --\n{top(stats, 3, args.top)}\n"
            f"-- by own time --\n{top(stats, 2, args.top)}")
    await executor.stop()
    db.close()

    # -- report -------------------------------------------------------------------------------
    end_load = os.getloadavg()
    print(f"load average: start {load[0]:.2f}, end {end_load[0]:.2f} on {os.cpu_count()} "
          f"CPUs; Python {sys.version.split()[0]}")
    idle_cpu, idle_wall = med(steady, "cpu"), med(steady, "wall")
    bp_cpu, bp_wall = med(base_parse, "cpu"), med(base_parse, "wall")
    bl_cpu, bl_wall = med(base_plan, "cpu"), med(base_plan, "wall")
    print(f"\n{'':52s} {'cpu':>9s} {'wall':>9s} {'git cpu':>9s}")

    def row(label: str, cpu: float, wall: float, git_cpu: float | None = None) -> None:
        g = "" if git_cpu is None else f"{git_cpu:7.3f} s"
        print(f"  {label:50s} {cpu:7.3f} s {wall:7.3f} s {g:>9s}")

    row("first pass (fetch + snapshot + parse + plan + fold)", first.cpu, first.wall,
        first.git_cpu)
    print("  parts of the first pass, each measured alone:")
    for label, sample in first_parts.items():
        row("  " + label, sample.cpu, sample.wall, sample.git_cpu)
    row("  parse_inventory + desired_hosts (= baseline A)", bp_cpu, bp_wall)
    for i, s in enumerate(steady, 2):
        row(f"idle pass {i}", s.cpu, s.wall, s.git_cpu)
    row(f"IDLE PASS, median of {len(steady)}", idle_cpu, idle_wall, med(steady, "git_cpu"))
    row(f"baseline A: parse_inventory + desired_hosts (x{len(base_parse)})", bp_cpu, bp_wall)
    row(f"baseline B: plan(...) alone (x{len(base_plan)})", bl_cpu, bl_wall)
    print("  parts of an idle pass, each measured alone (median):")
    for label, key in (("fetch (git fetch + git log, unchanged)", "fetch"),
                       ("StateDB.hosts() (decode every record)", "hosts"),
                       ("Executor.observe (power_state of every server)", "observe")):
        row("  " + label, med(parts[key], "cpu"), med(parts[key], "wall"),
            med(parts[key], "git_cpu"))
    row("  plan(...) (= baseline B)", bl_cpu, bl_wall)
    known = [med(parts[k], "cpu") for k in parts] + [bl_cpu]
    known_wall = [med(parts[k], "wall") for k in parts] + [bl_wall]
    row("  the rest: status fold, put_many, set_fleet x2", idle_cpu - sum(known),
        idle_wall - sum(known_wall))
    print(f"\nIDLE PASS over {args.servers} servers: cpu {idle_cpu:.3f} s (goal <= 2 s: "
          f"{'met' if idle_cpu <= 2 else 'MISSED'}), wall {idle_wall:.3f} s; first pass cpu "
          f"{first.cpu:.3f} s, wall {first.wall:.3f} s")
    print(f"ratio idle pass / baseline A (re-validate): {idle_cpu / bp_cpu:.2f} (cpu), "
          f"{idle_wall / bp_wall:.2f} (wall)")
    print(f"ratio idle pass / baseline B (plan alone):  {idle_cpu / bl_cpu:.1f} (cpu), "
          f"{idle_wall / bl_wall:.1f} (wall)")
    print(f"ratio first pass / baseline A:              {first.cpu / bp_cpu:.2f} (cpu), "
          f"{first.wall / bp_wall:.2f} (wall)")
    print("\nmemory (RSS at each stage; the FakeBmc share stands for run's Redfish clients)")
    for label, value in rss.items():
        print(f"  {label:50s} {value:7.1f} MiB")
    print(f"  {'peak RSS (ru_maxrss, incl. the setup parse)':50s} {maxrss_mib():7.1f} MiB")
    mib = 1 / 2**20
    print(f"  tracemalloc: the parsed revision + pass state keeps {kept * mib:.1f} MiB "
          f"(first pass peak {first_peak * mib:.1f} MiB); one idle pass allocates "
          f"{(idle_peak - before) * mib:.1f} MiB at its peak, keeps {(after - before) * mib:+.1f}")
    if profile_text:
        print(profile_text)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", type=int, default=5000)
    ap.add_argument("--passes", type=int, default=5, help="idle passes after the first")
    ap.add_argument("--profile", action="store_true", help="profile one more idle pass")
    ap.add_argument("--profile-clock", choices=("cpu", "wall"), default="cpu",
                    help="cProfile's clock: each thread's CPU time (default) or wall time")
    ap.add_argument("--top", type=int, default=10, help="profile lines to print")
    args = ap.parse_args()
    if args.passes < 1:
        ap.error("--passes must be at least 1")
    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
        return asyncio.run(bench(args, Path(tmp)))


if __name__ == "__main__":
    raise SystemExit(main())
