"""Lab, TCG: a git push of a BMC-only server file -> its inspection report committed back.

Brings a lab up in reconcile mode in a temporary directory (lab-host-01 starting ``off``),
pushes lab-host-01's file reduced to its BMC with ``state: inspected`` and times until
``inspection/lab-host-01.yaml`` with a ``hardware`` section is on the remote branch. Side by
side, from the same run: the inspect workflow's own steps (first step started -> last step
ended, from the state database's history): the baseline is the inspection itself, the rest is
the loop's share (fetch, decide, the commit-back and its push). Prints per-step durations,
both figures and their ratio.

Needs root, the lab's Debian packages and the cached base images (scripts/setup.sh).

    .venv/bin/python bench/lab_inspect.py [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.lab_install import HOST, push, ready_at, row, wait  # noqa: E402
from reconciler.adapters.run import run  # noqa: E402
from reconciler.imagebuild import cache  # noqa: E402
from reconciler.lab import gitops, lifecycle  # noqa: E402
from reconciler.lab.spec import LabPaths  # noqa: E402


def push_bmc_only(repo: str, work: Path) -> None:
    env = gitops.GIT_IDENTITY
    run(["git", "clone", "-q", repo, work], timeout=60, env=env)
    path = work / "servers" / f"{HOST}.yaml"
    doc = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({"profile": doc["profile"], "state": "inspected",
                                    "bmc": doc["bmc"]}, sort_keys=False))
    run(["git", "commit", "-qam", f"{HOST}: inspect it, known only by its BMC"], timeout=60,
        cwd=work, env=env)
    push(work)


def report_committed(repo: str) -> bool:
    shown = run(["git", "show", f"main:inspection/{HOST}.yaml"], timeout=60, cwd=repo,
                check=False)
    return shown.returncode == 0 and b"\nhardware:" in shown.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: the lab needs root")
    images = cache.ensure("amd64")
    work = Path(tempfile.mkdtemp(prefix="bench-inspect-"))
    paths = LabPaths(work / "lab")
    options = lifecycle.UpOptions(hosts=1, secrets_dir=work / "secrets", service=(
        lifecycle.ServiceOptions(images.images_dir, states={HOST: "off"})))
    load = os.getloadavg()[0]
    try:
        state = lifecycle.up(paths, options)
        data = Path(state.reconciler_data)
        wait("converged on the first revision", lambda: ready_at(data, None), 300)
        start = time.monotonic()
        push_bmc_only(state.inventory_repo, work / "clone")
        wait("reported", lambda: report_committed(state.inventory_repo), 1800)
        total = time.monotonic() - start
        operation = row(data)["lastOperation"]
        steps = {h["step"]: h["seconds"] for h in operation}
        workflow = operation[-1]["ended"] - operation[0]["started"]
        subject = run(["git", "log", "-1", "--format=%s", "main"], timeout=60,
                      cwd=state.inventory_repo).stdout.decode().strip()
    finally:
        if not args.keep:
            lifecycle.down(paths)
            shutil.rmtree(work, ignore_errors=True)
    print(f"lab inspection, TCG, load {load:.1f} at start ({os.cpu_count()} cores)")
    print(f"  {'step':<18}{'seconds':>10}")
    for name, seconds in steps.items():
        print(f"  {name:<18}{seconds:>10.1f}")
    print(f"  {'push -> report commit on the remote':<40}{total:>8.1f} s  ({subject})")
    print(f"  {'baseline: the inspect workflow itself':<40}{workflow:>8.1f} s")
    print(f"  ratio push-to-commit / workflow: {total / workflow:.2f} "
          f"(the loop's share: {total - workflow:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
