"""Benchmark: git push -> the first Redfish call of the action it asks for (issue 15, webhook).

Everything ``reconciler run`` does between the two, in one process: a real bare git remote and
:class:`GitSource`'s mirror, the real :class:`Reconciler` under
:func:`reconciler.engine.loop.run_forever`, the real :class:`Executor` and its Redfish thread
pool over one :class:`FakeBmc` per server (which stamps the time of every call), and the real
build service (``reconciler.web.services.start``, cheroot on a loopback port) with a FleetLink
whose wake sets the loop's event. The fleet starts converged (every server ``provisioned`` and
powered on, the state database filled as applied, power observed); a run commits one server's
``state: off``, pushes it, and takes the time from the end of the push to the first call on
that server's BMC (the power-off workflow's first step).

- webhook: the loop polls every 300 s; right after the push, a signed GitHub-style POST to
  ``/api/v1/hooks/git`` (a new connection, as a git host opens) wakes it.
- baseline, polling: the same change picked up by the loop polling every 10 s (jittered 5 %),
  no webhook. Each push waits a random part of the interval first, so the runs sample the
  timer's phase as pushes in the wild do.

Printed: the median (and min / max) of each, the ratio polling / webhook, the passes each run
took, and the webhook's own answer time. Goal: webhook <= 2 s.

    .venv/bin/python bench/webhook_latency.py [--runs 7] [--poll 10]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncssh  # noqa: E402
import requests  # noqa: E402

from reconciler.adapters.redfish.fake import RECORDINGS, FakeBmc  # noqa: E402
from reconciler.adapters.run import run  # noqa: E402
from reconciler.adapters.statedb import StateDB  # noqa: E402
from reconciler.engine.executor import Executor, Limits  # noqa: E402
from reconciler.engine.loop import Reconciler, run_forever  # noqa: E402
from reconciler.engine.metrics import Metrics  # noqa: E402
from reconciler.engine.source import GitSource  # noqa: E402
from reconciler.lab.gitops import GIT_IDENTITY  # noqa: E402
from reconciler.plan.decide import as_applied  # noqa: E402
from reconciler.render.renderer import RenderSettings  # noqa: E402
from reconciler.settings import load_settings  # noqa: E402
from reconciler.web.fleet import FleetLink  # noqa: E402
from reconciler.web.services import start  # noqa: E402
from tests.fixtures.inventory import files, server  # noqa: E402
from tests.fixtures.service import free_port  # noqa: E402

SECRET = b"bench webhook secret"
WEBHOOK_INTERVAL = 300.0
GOAL = 2.0


class Remote:
    """A bare repository and a work tree pushing the fleet's files to it."""

    def __init__(self, root: Path) -> None:
        self.bare, self.work = root / "inventory.git", root / "work"
        run(["git", "init", "-q", "--bare", "-b", "main", self.bare], timeout=30)
        run(["git", "init", "-q", "-b", "main", self.work], timeout=30)
        run(["git", "remote", "add", "origin", self.bare], timeout=30, cwd=self.work)

    def push(self, docs: dict[str, Any], message: str) -> None:
        for path, data in files(docs).items():
            (self.work / path).parent.mkdir(parents=True, exist_ok=True)
            (self.work / path).write_bytes(data)
        for argv in (["add", "-A"], ["commit", "-q", "-m", message],
                     ["push", "-q", "origin", "main"]):
            run(["git", *argv], timeout=30, cwd=self.work, env=GIT_IDENTITY)


class StampedBmc(FakeBmc):
    """A FakeBmc that remembers when it was first called after :meth:`arm`, and says so."""

    def __init__(self, docs: dict[str, Any], name: str) -> None:
        super().__init__(docs, name=name)
        self.first: float | None = None
        self.first_method = ""
        self._signal: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._lock = threading.Lock()

    def arm(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        event = asyncio.Event()
        with self._lock:
            self.first, self._signal = None, (loop, event)
        return event

    def _call(self, method: str, *args: object) -> None:
        now = time.perf_counter()
        with self._lock:
            if self._signal is not None and self.first is None:
                self.first, self.first_method = now, method
                loop, event = self._signal
                loop.call_soon_threadsafe(event.set)
        super()._call(method, *args)


class Builds:
    """The build client's interface: a power-off never builds."""

    def submit(self, request: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("a power-off submitted a build")

    def build(self, build_id: str) -> dict[str, Any] | None:
        raise AssertionError("a power-off polled a build")


def delivery() -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"ref": "refs/heads/main", "after": "0" * 40}).encode()
    signature = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    return body, {"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={signature}",
                  "Content-Type": "application/json"}


async def bench(args: argparse.Namespace, root: Path) -> int:
    loop = asyncio.get_running_loop()
    names = [f"n{i}" for i in range(1, 2 * args.runs + 1)]
    docs: dict[str, Any] = {name: server(i) for i, name in enumerate(names, 1)}
    remote = Remote(root)
    remote.push(docs, "the fleet, every server provisioned")

    data = root / "data"
    source = GitSource(str(remote.bare), "main", "", data / "repo", timeout=60)
    db = StateDB(data / "state.db")
    settings = RenderSettings(ssh_keys=("ssh-ed25519 AAAA reconciler",))
    recorded = json.loads((RECORDINGS / "emulator.json").read_text())
    fakes: dict[str, StampedBmc] = {}
    executor = Executor(db, bmc_factory=lambda h: fakes[h.name],
                        build=Builds(),  # type: ignore[arg-type]
                        render=lambda h, k, p, i: None,  # type: ignore[arg-type,return-value]
                        client_key=asyncssh.generate_private_key("ssh-ed25519"),
                        limits=Limits())
    # Power is asked at most every 120 s when idle, as `reconciler run` does by default: a
    # call on a server's BMC after its push is the action's.
    rec = Reconciler(source, executor, settings, observe_interval=3600.0)
    executor.render = rec.render
    await rec.refresh()
    hosts = rec.desired.hosts
    assert len(hosts) == len(names) and not rec.desired.invalid, rec.desired.problems
    status, _ = as_applied(hosts, rec.desired.fetched.revision if rec.desired.fetched else None)
    db.put_many(status)
    for name, host in hosts.items():
        fake = StampedBmc(recorded, host.bmc.url)
        fake.system["Id"] = host.bmc.system_id
        fake.system["PowerState"] = "On"
        fakes[name] = fake
    await rec.tick()  # power observed (and kept observe_interval): the fleet is idle
    assert not executor.tasks, "the converged fleet started a workflow"

    wake = asyncio.Event()
    (root / "images").mkdir()
    port = free_port()
    service = load_settings(None, {}, {
        "listen": f"127.0.0.1:{port}", "data_dir": str(root / "service"),
        "images": str(root / "images"), "public_url": f"http://127.0.0.1:{port}",
        "trusted": ["127.0.0.0/8"], "shutdown_timeout": "5"})  # fmt: skip
    def wake_loop() -> None:  # from an HTTP thread
        loop.call_soon_threadsafe(wake.set)

    link = FleetLink(data, "main", wake=wake_loop, webhook_secret=SECRET, metrics=Metrics())
    stop_service = start(service, link)
    hook = f"http://127.0.0.1:{port}/api/v1/hooks/git"
    body, headers = delivery()
    results: dict[str, list[float]] = {"webhook": [], "polling": []}
    passes: dict[str, list[int]] = {"webhook": [], "polling": []}
    answered: list[float] = []
    print(f"{len(names)} servers, converged; build service on {hook}; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    try:
        for mode, interval in (("webhook", WEBHOOK_INTERVAL), ("polling", args.poll)):
            stop = asyncio.Event()
            started = rec.passes
            task = asyncio.create_task(run_forever(rec, interval, stop, wake=wake))
            while rec.passes == started:  # the pass the loop makes at its start
                await asyncio.sleep(0.01)
            await executor.wait_idle()
            todo = names[:args.runs] if mode == "webhook" else names[args.runs:]
            for name in todo:
                if mode == "polling":
                    await asyncio.sleep(random.uniform(0, interval))  # the timer's phase
                fired = fakes[name].arm(loop)
                before = rec.passes
                docs[name] = server(int(name[1:]), state="off")
                await asyncio.to_thread(remote.push, docs, f"{name}: off")
                pushed = time.perf_counter()
                if mode == "webhook":
                    answer = await asyncio.to_thread(requests.post, hook, data=body,
                                                     headers=headers, timeout=30)
                    answered.append(time.perf_counter() - pushed)
                    assert answer.status_code == 202, answer.text
                await asyncio.wait_for(fired.wait(), timeout=interval * 2 + 60)
                first = fakes[name].first
                assert first is not None
                results[mode].append(first - pushed)
                passes[mode].append(rec.passes - before)
                await executor.wait_idle()
                print(f"  {mode:8} {name:4} first Redfish call {first - pushed:6.3f} s after "
                      f"the push ({fakes[name].first_method}), {rec.passes - before} "
                      f"pass(es)", flush=True)
            stop.set()
            await task
    finally:
        stop_service()
        db.close()

    def line(label: str, values: list[float]) -> str:
        return (f"{label:34} median {statistics.median(values):6.3f} s   min "
                f"{min(values):6.3f}   max {max(values):6.3f}   ({len(values)} runs)")

    hook_median = statistics.median(results["webhook"])
    poll_median = statistics.median(results["polling"])
    print()
    print("push -> first Redfish call of the resulting power-off")
    print(line("webhook (poll every 300 s)", results["webhook"]) +
          f"   goal <= {GOAL:g} s: {'met' if hook_median <= GOAL else 'NOT met'}")
    print(line(f"baseline: polling every {args.poll:g} s", results["polling"]))
    print(f"ratio polling / webhook (medians): {poll_median / hook_median:.1f}x")
    print(f"webhook answered {statistics.median(answered) * 1000:.1f} ms after the push "
          f"(median); passes per push: webhook {passes['webhook']}, polling {passes['polling']}")
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7, help="pushes per mode (default 7)")
    parser.add_argument("--poll", type=float, default=10.0,
                        help="the baseline's poll interval in seconds (default 10)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="webhook-bench-") as tmp:
        return asyncio.run(bench(args, Path(tmp)))


if __name__ == "__main__":
    raise SystemExit(main())
