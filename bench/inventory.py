"""Benchmark: validate + IPAM + render + plan over a generated 10,000-server inventory.

Prints each stage, the total, and a baseline measured in the same run: plain
``yaml.safe_load`` of the same files (what any tool reading this inventory pays at least),
with the ratio total/baseline. Goal: total <= 2 s for 10,000 servers.

    .venv/bin/python bench/inventory.py [--servers 10000] [--git]

``--git`` also times reading both revisions through the git adapter (a real repository in a
temporary directory; building it is not timed).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.model import desired_hosts, parse_inventory  # noqa: E402
from reconciler.plan.inventory_diff import diff_inventories, to_record  # noqa: E402
from reconciler.plan.markdown import render_markdown  # noqa: E402
from reconciler.render import Renderer  # noqa: E402

T = TypeVar("T")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchmarkKeyBenchmarkKeyBenchmarkKey00 bench@example"


def generate(count: int, *, variant: int = 0) -> dict[str, bytes]:
    """An inventory of ``count`` servers in /21 subnets (2,045 usable offsets, 800 hosts each).

    ``variant`` 1 is a plausible next commit: 1 % of servers changed, 0.5 % removed, 0.5 % added.
    """
    per_subnet = 800
    subnets = (count + 100) // per_subnet + 1
    lines = ["subnets:"]
    for s in range(subnets):
        lines += [f"  dc{s}:", f"    cidr: 10.{s // 32}.{(s % 32) * 8}.0/21",
                  f"    gateway: 10.{s // 32}.{(s % 32) * 8}.1",
                  f"    dns: [10.{s // 32}.{(s % 32) * 8}.1]",
                  "    reserved:", f"      - start: 10.{s // 32}.{(s % 32) * 8 + 7}.200",
                  f"        end: 10.{s // 32}.{(s % 32) * 8 + 7}.250", "        reason: dhcp"]
    files = {"subnets.yaml": ("\n".join(lines) + "\n").encode()}
    files["profiles.yaml"] = f"""\
base_artifacts:
  amd64: {{kernels: [vmlinuz-amd64], initramfs: [initramfs-amd64.img]}}
profiles:
  default:
    architecture: amd64
    kernel: vmlinuz-amd64
    initramfs: initramfs-amd64.img
    cmdline: console=ttyS0,115200n8
    boot_method: cd
    image:
      url: https://images.example/debian-12-amd64.qcow2
      sha256: "{hashlib.sha256(b'image').hexdigest()}"
    cloud_init:
      ssh_keys: ["{KEY}"]
      user_data: {{timezone: UTC}}
""".encode()
    removed = set(range(7, count, 200)) if variant else set()
    changed = set(range(3, count, 100)) if variant else set()
    extra = count // 200 if variant else 0
    for i in list(range(count)) + list(range(count, count + extra)):
        if i in removed:
            continue
        subnet = i // per_subnet
        name = f"r{i // 40:03d}-n{i % 40:02d}-{i:05d}"
        system_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench/{i}"))
        address = "auto"
        if i % 10 == 5:  # some static addresses, unique per server
            address = f"10.{subnet // 32}.{(subnet % 32) * 8 + (i % 800) // 250}.{i % 250 + 2}"
        image = ""
        if i in changed:
            image = ("image:\n  url: https://images.example/debian-13-amd64.qcow2\n"
                     f"  sha256: \"{hashlib.sha256(b'new').hexdigest()}\"\n")
        files[f"servers/{name}.yaml"] = f"""\
# yaml-language-server: $schema=../../schemas/inventory/server.schema.json
state: provisioned
protected: {str(i % 97 == 0).lower()}
bmc:
  address: bmc-{name}.oob.example:443
  system_id: {system_id}
  credentials: dc-bmc
  boot_method: {"uefi-http" if i % 3 else "cd"}
interfaces:
  - mac: "02:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}:01"
    subnet: dc{subnet}
    address: {address}
  - mac: "02:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}:02"
disk:
  serial: DISK{i:08d}
{image}cloud_init:
  user_data:
    runcmd: ["echo {name}"]
""".encode()
    return files


CPU: dict[str, float] = {}


def timed(label: str, fn: Callable[[], T], results: dict[str, float]) -> T:
    """Wall time into ``results``, CPU time of this process into CPU (the machine is shared)."""
    start, cpu = time.perf_counter(), time.process_time()
    value = fn()
    results[label] = time.perf_counter() - start
    CPU[label] = time.process_time() - cpu
    return value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", type=int, default=10_000)
    ap.add_argument("--git", action="store_true", help="also time the git adapter")
    args = ap.parse_args()
    load = os.getloadavg()
    head_files = generate(args.servers, variant=1)
    base_files = generate(args.servers, variant=0)
    # Servers with static addresses are the senior ones (added first), as they would be in a
    # fleet that pinned a few addresses before turning on IPAM; otherwise a static address can
    # land on a senior server's automatic one, which is (correctly) a validation error.
    seniority = {Path(p).stem: 0 if b"address: 10." in d else 1
                 for p, d in base_files.items() if p.startswith("servers/")}
    t: dict[str, float] = {}

    def baseline() -> list[Any]:
        return [yaml.safe_load(data) for data in head_files.values()]

    timed("baseline: yaml.safe_load of the same files", baseline, t)
    csafe = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    timed("(for reference: yaml.load CSafeLoader)",
          lambda: [yaml.load(data, Loader=csafe) for data in head_files.values()], t)

    cache: dict[Any, Any] = {}  # shared by both revisions (pass one to parse_inventory twice)
    head, problems = timed("validate + IPAM (head)",
                           lambda: parse_inventory(head_files, seniority=seniority,
                                                   cache=cache), t)
    hosts = timed("desired hosts (head)", lambda: desired_hosts(head), t)
    renderer = Renderer(head.templates)
    rendered, failed = timed("render (head, provision)", lambda: renderer.render_all(hosts), t)
    if failed or len(rendered) != len(hosts):
        raise SystemExit(f"render failed for {len(failed)} hosts")
    base, _ = timed("validate + IPAM (base)",
                    lambda: parse_inventory(base_files, seniority=seniority, cache=cache), t)
    plan = timed("plan (diff + markdown)", lambda: (
        p := diff_inventories(base, head, problems=problems, head_hosts=hosts),
        render_markdown(p))[0], t)
    # The same base revision and plan without the cache shared with head: every base file is
    # parsed, checked and built again and every base host gets its digests computed again.
    # Not part of TOTAL; printed as the figure for a caller that does not share the cache.
    alone, _ = timed("[unshared] validate + IPAM (base)",
                     lambda: parse_inventory(base_files, seniority=seniority), t)
    alone_plan = timed("[unshared] plan (diff + markdown)", lambda: (
        p := diff_inventories(alone, head, problems=problems, head_hosts=hosts),
        render_markdown(p))[0], t)
    if to_record(alone_plan) != to_record(plan):
        raise SystemExit("the shared cache changed the plan")  # never: the memo is exact
    if args.git:
        with tempfile.TemporaryDirectory() as tmp:
            repo = _git_repo(Path(tmp), base_files, head_files)
            timed("git: read both revisions", lambda: _git_read(repo), t)

    main_stages = [k for k in t if not k.startswith(("baseline", "git", "(", "["))]
    total, cpu_total = sum(t[k] for k in main_stages), sum(CPU[k] for k in main_stages)
    unshared = [k for k in main_stages if "(base)" not in k and not k.startswith("plan")]
    unshared += [k for k in t if k.startswith("[unshared]")]
    u_total, u_cpu = sum(t[k] for k in unshared), sum(CPU[k] for k in unshared)
    base_t = t["baseline: yaml.safe_load of the same files"]
    cpu_base = CPU["baseline: yaml.safe_load of the same files"]
    print(f"servers: {len(hosts)} valid in head ({len(problems)} problems), "
          f"{plan.summary()}")
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"on {os.cpu_count()} CPUs; one process, cold (empty caches at start)")
    print(f"  {'stage':45s} {'wall':>9s} {'cpu':>9s}")
    for label, seconds in t.items():
        print(f"  {label:45s} {seconds:7.3f} s {CPU[label]:7.3f} s")
    print(f"TOTAL validate+IPAM+render+plan: wall {total:.3f} s, cpu {cpu_total:.3f} s "
          f"(goal <= 2 s); baseline wall {base_t:.3f} s, cpu {cpu_base:.3f} s; "
          f"ratio total/baseline = {total / base_t:.2f} (wall), {cpu_total / cpu_base:.2f} (cpu)")
    print(f"TOTAL without sharing the cache between revisions: wall {u_total:.3f} s, "
          f"cpu {u_cpu:.3f} s; ratio {u_total / base_t:.2f} (wall), {u_cpu / cpu_base:.2f} (cpu)")
    return 0


def _git_repo(root: Path, base_files: dict[str, bytes], head_files: dict[str, bytes]) -> Path:
    """A real repository with base and head as two commits (not timed)."""
    import git

    repo = git.Repo.init(root)
    for files, message in ((base_files, "base"), (head_files, "head")):
        for p in root.glob("servers/*"):
            p.unlink()
        for rel, data in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        repo.git.add("-A", ".")
        repo.git.commit("-q", "-m", message, "--author", "bench <bench@example>")
    return root


def _git_read(root: Path) -> None:
    from reconciler.adapters.git import GitInventory

    inv = GitInventory(root)
    head = inv.snapshot("HEAD")
    inv.snapshot("HEAD~1", known={head.blobs[p]: d for p, d in head.files.items()})


if __name__ == "__main__":
    raise SystemExit(main())
