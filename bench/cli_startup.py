#!/usr/bin/env python3
"""Time the ``reconciler`` command as whole processes, against their floors.

    .venv/bin/python bench/cli_startup.py [--runs 21] [--build-runs 5] [--size 200] [--no-build]

Start-up: ``python3 -c pass`` (the issue's baseline: the venv's base interpreter, not a shim
on PATH), ``.venv/bin/python -c pass`` (the same interpreter with the venv's site-packages:
the real floor), ``reconciler --version`` and
``reconciler --help``, run round-robin so a burst of load elsewhere hits all alike; median wall
time of ``--runs`` runs each. Goal: ``--version`` and ``--help`` at most 0.12 s.

Build: ``reconciler build`` of a ``--size`` MB base initramfs (incompressible bytes, like a
zstd-compressed initramfs) and the amd64 test kernel (scripts/fetch-boot-tools.sh) into a UKI
and an ISO, against ``cp`` of those two outputs (two ``cp`` processes), all on the same
filesystem, warm page cache and GRUB boot image cached (as in the service). Goal: at most 2x.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv" / "bin"
STARTUP_GOAL = 0.12
BUILD_GOAL = 2.0


# As installed: bytecode cached (pip compiles at install; an editable install caches on the
# first run), whatever this shell says.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall(argv: Sequence[str | os.PathLike[str]], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(
        [os.fspath(a) for a in argv], check=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, env=env or ENV,
    )  # fmt: skip
    return time.perf_counter() - start


def startup(runs: int) -> None:
    # The venv's own interpreter outside the venv: `python3` on PATH may be a shell shim
    # (pyenv's costs 0.1 s alone).
    python3 = str(Path(sys.base_prefix) / "bin" / "python3")
    cases: list[tuple[str, list[str]]] = [
        ("python3 -c pass", [python3, "-c", "pass"]),
        (".venv/bin/python -c pass", [str(VENV / "python"), "-c", "pass"]),
        ("reconciler --version", [str(VENV / "reconciler"), "--version"]),
        ("reconciler --help", [str(VENV / "reconciler"), "--help"]),
    ]
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    for argv in (argv for _, argv in cases):
        wall(argv)  # warm the page cache and the bytecode
    for _ in range(runs):
        for name, argv in cases:
            times[name].append(wall(argv))
    base = statistics.median(times["python3 -c pass"])
    floor = statistics.median(times[".venv/bin/python -c pass"])
    print(f"start-up, median of {runs} runs (round-robin)")
    print(f"{'command':<28} {'wall s':>7} {'/python3':>9} {'/venv py':>9}  goal")
    for name, _ in cases:
        t = statistics.median(times[name])
        goal = ""
        if name.startswith("reconciler"):
            goal = f"<= {STARTUP_GOAL:.2f} s: {'met' if t <= STARTUP_GOAL else 'MISSED'}"
        print(f"{name:<28} {t:7.3f} {t / base:8.1f}x {t / floor:8.1f}x  {goal}")


def build(runs: int, size_mb: int, work: Path) -> None:
    kernel = ROOT / "build" / "cache" / "boot-tools" / "kernels" / "amd64" / "vmlinuz"
    if not kernel.is_file():
        print(f"no kernel at {kernel}: run scripts/fetch-boot-tools.sh", file=sys.stderr)
        return
    work.mkdir(parents=True, exist_ok=True)
    base = work / f"initramfs-{size_mb}.img"
    if not base.is_file() or base.stat().st_size != size_mb * 1_000_000:
        with open(base, "wb") as f:
            for _ in range(size_mb):
                f.write(os.urandom(1_000_000))
    out = work / "out"
    env = {**ENV, "RECONCILER_CACHE": str(work / "cache")}
    argv = [
        VENV / "reconciler", "build", "--arch", "amd64", "--kernel", kernel,
        "--initramfs", base, "--cmdline", "console=ttyS0,115200n8",
        "--file", f"/etc/motd={ROOT / 'README.md'}:0644", "--out", out,
    ]  # fmt: skip
    uki, iso = out / "uki.efi", out / "boot.iso"
    copies = (work / "cp-uki.efi", work / "cp-boot.iso")

    def ours() -> float:
        shutil.rmtree(out, ignore_errors=True)
        return wall(argv, env)

    def cp() -> float:
        for copy in copies:
            copy.unlink(missing_ok=True)
        return wall(["cp", uki, copies[0]]) + wall(["cp", iso, copies[1]])

    ours()  # builds the cached GRUB boot image, warms the page cache
    cp()
    t_ours, t_cp = [], []
    for _ in range(runs):
        t_ours.append(ours())
        t_cp.append(cp())
    mine, floor = statistics.median(t_ours), statistics.median(t_cp)
    ratio = mine / floor
    print(
        f"\nbuild of a {size_mb} MB initramfs: UKI {uki.stat().st_size / 1e6:.1f} MB + "
        f"ISO {iso.stat().st_size / 1e6:.1f} MB, median of {runs} runs"
    )
    print(f"{'reconciler build (whole process)':<36} {mine:7.3f} s")
    print(f"{'cp of uki.efi + cp of boot.iso':<36} {floor:7.3f} s")
    print(
        f"{'ratio':<36} {ratio:7.2f}x  goal <= {BUILD_GOAL:.0f}x: "
        f"{'met' if ratio <= BUILD_GOAL else 'MISSED'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="start-up runs per command")
    parser.add_argument("--build-runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=200, help="base initramfs size in MB")
    parser.add_argument("--no-build", action="store_true", help="start-up only")
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench-cli")
    args = parser.parse_args()
    startup(max(3, args.runs))
    if not args.no_build:
        build(max(3, args.build_runs), args.size, args.workdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
