#!/usr/bin/env python3
"""Time overlay + UKI + ISO against ``cp`` of the same bytes, objcopy, ukify and grub-mkrescue.

    .venv/bin/python bench/build_artifacts.py [--sizes 50,200] [--runs 3] [--workdir DIR]

For each base initramfs size (incompressible bytes, like a zstd-compressed initramfs) and the
amd64 test kernel (scripts/fetch-boot-tools.sh), it measures, median of ``--runs`` runs with a
warm page cache, all outputs on the same filesystem:

- ours UKI: gzip overlay + streaming UKI assembly + read-back check (reconciler.artifacts);
- ours ISO: the direct ISO writer (GRUB boot image cached, as in the service);
- cp: ``cp`` of our UKI and of our ISO (the floor: the same bytes, copied);
- objcopy: ``objcopy --add-section ... --change-section-vma`` with the same placement, from
  the same stub, kernel and a prepared initrd file (concatenated outside the timing);
- ukify 254 (backports' systemd, unpacked with ``apt-get download`` + ``dpkg -x`` into the
  work directory, never installed) with the same stub and inputs;
- grub-mkrescue: an ISO with the UKI and a grub.cfg that chainloads it;
- xorriso: an ISO with our cached GRUB boot image and the UKI (what a xorriso-based writer
  would cost).

It prints every figure with its baseline and the ratio. Goals: UKI <= 2x cp, ISO <= 2x cp.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler.artifacts import cpio, iso, uki  # noqa: E402
from reconciler.artifacts.pipeline import EXPECTED_SECTIONS  # noqa: E402
from reconciler.artifacts.request import parse_build_request  # noqa: E402
from reconciler.artifacts.toolchain import (  # noqa: E402
    ARCHES,
    boot_tools_dir,
    find_stub,
    grub_boot_image,
)

UKIFY_SOURCES = (
    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
    "http://deb.debian.org/debian bookworm-backports main\n"
)


class Timing(NamedTuple):
    wall: float  # seconds, median
    cpu: float  # user + system seconds of this process and its children, median


def median_time(fn: Callable[[], object], runs: int, fresh: Path | None = None) -> Timing:
    """Median wall and CPU time; ``fresh`` is deleted before each run (a new file each time).

    CPU time is reported too because wall time on a shared 2-core machine swings with the
    load of other jobs; copy_file_range's kernel work counts as system time.
    """
    walls, cpus = [], []
    for _ in range(runs):
        if fresh is not None:
            fresh.unlink(missing_ok=True)
        before, start = os.times(), time.perf_counter()
        fn()
        wall, after = time.perf_counter() - start, os.times()
        walls.append(wall)
        cpus.append(
            sum(after[:4]) - sum(before[:4])  # user, system, children_user, children_system
        )
    return Timing(statistics.median(walls), statistics.median(cpus))


def time_cmd(argv: list[str | Path], runs: int) -> Timing:
    out = argv[-1] if isinstance(argv[-1], Path) else None
    return median_time(lambda: sh(*argv), runs, out)


def sh(*argv: str | Path, env: dict[str, str] | None = None) -> None:
    subprocess.run(
        [os.fspath(a) for a in argv],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


def fetch_ukify(work: Path) -> Path | None:
    """ukify from bookworm-backports' systemd, unpacked (never installed) under ``work``."""
    base = work / "ukify"
    script = base / "root" / "lib" / "systemd" / "ukify"
    if script.is_file():
        return script
    state = base / "apt" / "state"
    (state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (base / "apt" / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (state / "status").write_text("")
    (base / "sources.list").write_text(UKIFY_SOURCES)
    opts = [
        "-o", "APT::Sandbox::User=root",
        "-o", f"Dir::State={state}", "-o", f"Dir::State::status={state / 'status'}",
        "-o", f"Dir::Cache={base / 'apt' / 'cache'}",
        "-o", f"Dir::Etc::sourcelist={base / 'sources.list'}",
        "-o", "Dir::Etc::sourceparts=/nonexistent", "-o", "Debug::NoLocking=1",
    ]  # fmt: skip
    try:
        sh("apt-get", *opts, "-qq", "update")
        subprocess.run(
            ["apt-get", *opts, "-qq", "download", "systemd/bookworm-backports"],
            check=True, cwd=base, capture_output=True,
        )  # fmt: skip
        deb = next(base.glob("systemd_*.deb"))
        sh("dpkg-deb", "-x", deb, base / "root")
    except (subprocess.CalledProcessError, StopIteration) as exc:
        print(f"ukify: cannot fetch backports' systemd ({exc}); skipping ukify", file=sys.stderr)
        return None
    return script if script.is_file() else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,200", help="base initramfs sizes in MB")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench-artifacts")
    args = parser.parse_args()
    runs = max(3, args.runs)

    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    kernel = boot_tools_dir() / "kernels" / "amd64" / "vmlinuz"
    if not kernel.is_file():
        print(f"no kernel at {kernel}: run scripts/fetch-boot-tools.sh", file=sys.stderr)
        return 2
    stub = find_stub("amd64")
    boot_image = grub_boot_image("amd64", iso.ISO_UUID, iso.UKI_PATH, cache=work / "cache")
    ukify = fetch_ukify(work)
    req = parse_build_request(
        {
            "kernel": "vmlinuz",
            "initramfs": "base.img",
            "cmdline": "console=ttyS0",
            "architecture": "amd64",
            "files": [{"path": f"/etc/bench/{i}", "contentBase64": "aGVsbG8K"} for i in range(20)],
        }
    )
    machine = ARCHES["amd64"].machine
    results: list[tuple[str, Timing, Timing]] = []

    for size_mb in (int(s) for s in args.sizes.split(",")):
        base = work / f"base-{size_mb}.img"
        if not base.is_file() or base.stat().st_size != size_mb * 1_000_000 + 3:
            with open(base, "wb") as f:  # +3: exercise the 4-byte padding
                for _ in range(size_mb):
                    f.write(os.urandom(1_000_000))
                f.write(b"abc")
        out_uki, out_iso = work / "uki.efi", work / "boot.iso"

        def ours_uki(base: Path = base, out_uki: Path = out_uki) -> None:
            overlay = cpio.overlay_gzip(req)
            sections: list[tuple[str, list[uki.Part]]] = [
                (".osrel", [uki.os_release("bench")]),
                (".cmdline", [req.cmdline.encode()]),
                (".initrd", [base, cpio.initrd_padding(base.stat().st_size), overlay]),
                (".linux", [kernel]),
            ]
            with open(out_uki, "wb") as f:
                uki.assemble(stub, sections, f)
            uki.verify(out_uki, machine=machine, expect=EXPECTED_SECTIONS)

        def ours_iso(out_uki: Path = out_uki, out_iso: Path = out_iso) -> None:
            with open(out_iso, "wb") as f:
                iso.write_iso(f, boot_image=boot_image, uki=out_uki)

        ours_uki()
        ours_iso()
        t_uki = median_time(ours_uki, runs, out_uki)
        t_iso = median_time(ours_iso, runs, out_iso)
        t_cp_uki = time_cmd(["cp", out_uki, work / "cp-uki.efi"], runs)
        t_cp_iso = time_cmd(["cp", out_iso, work / "cp-boot.iso"], runs)

        # objcopy with the same placement as ours, from a prepared initrd file.
        initrd = work / f"initrd-{size_mb}.img"
        with open(initrd, "wb") as f:
            uki.write_parts(
                f, [base, cpio.initrd_padding(base.stat().st_size), cpio.overlay_gzip(req)]
            )
        (work / "osrel").write_bytes(uki.os_release("bench"))
        (work / "cmdline").write_bytes(req.cmdline.encode())
        head, pe = uki.read_headers(stub)
        files = [("osrel", work / "osrel"), ("cmdline", work / "cmdline"),
                 ("initrd", initrd), ("linux", kernel)]  # fmt: skip
        placed = uki.layout(
            pe, stub.stat().st_size, [(f".{n}", p.stat().st_size) for n, p in files]
        )
        objcopy_args: list[str | Path] = ["objcopy"]
        for (name, path), sec in zip(files, placed, strict=True):
            objcopy_args += ["--add-section", f".{name}={path}"]
            objcopy_args += ["--change-section-vma", f".{name}={sec.virtual_address:#x}"]
        objcopy_args += [stub, work / "objcopy-uki.efi"]
        t_objcopy = time_cmd(objcopy_args, runs)

        t_ukify = Timing(float("nan"), float("nan"))
        if ukify is not None:
            ukify_args: list[str | Path] = [
                sys.executable, ukify, "build", "--linux", kernel, "--initrd", initrd,
                "--cmdline", req.cmdline, "--os-release", f"@{work / 'osrel'}",
                "--uname", "bench", "--stub", stub, "--output", work / "ukify-uki.efi",
            ]  # fmt: skip
            t_ukify = time_cmd(ukify_args, runs)

        rescue = work / "rescue"
        shutil.rmtree(rescue, ignore_errors=True)
        (rescue / "boot" / "grub").mkdir(parents=True)
        os.link(out_uki, rescue / "uki.efi")
        (rescue / "boot" / "grub" / "grub.cfg").write_text(
            "set timeout=0\nchainloader /uki.efi\nboot\n"
        )
        t_mkrescue = median_time(
            lambda: sh("grub-mkrescue", "-o", work / "mkrescue.iso", rescue),  # noqa: B023
            runs,
            work / "mkrescue.iso",
        )
        xorriso_args: list[str | Path] = [
            "xorriso", "-as", "mkisofs", "-quiet", "-e", "EFIBOOT.IMG", "-no-emul-boot",
            "-graft-points", f"EFIBOOT.IMG={boot_image}", f"UKI.EFI={out_uki}",
            "-o", work / "xorriso.iso",
        ]  # fmt: skip
        t_xorriso = time_cmd(xorriso_args, runs)

        mb = f"{size_mb} MB"
        results += [
            (f"{mb} UKI  ours (overlay+UKI+check)", t_uki, t_cp_uki),
            (f"{mb} UKI  objcopy", t_objcopy, t_cp_uki),
            (f"{mb} UKI  ukify 254", t_ukify, t_cp_uki),
            (f"{mb} ISO  ours", t_iso, t_cp_iso),
            (f"{mb} ISO  grub-mkrescue", t_mkrescue, t_cp_iso),
            (f"{mb} ISO  xorriso (cached GRUB image)", t_xorriso, t_cp_iso),
        ]
        print(
            f"{mb}: UKI {out_uki.stat().st_size / 1e6:.1f} MB, "
            f"ISO {out_iso.stat().st_size / 1e6:.1f} MB, median of {runs}",
            flush=True,
        )

    print(
        f"\n{'measurement':<40} {'wall s':>7} {'cp wall':>7} {'ratio':>7}"
        f" {'cpu s':>7} {'cp cpu':>7} {'ratio':>7}"
    )
    for name, t, base_t in results:
        print(
            f"{name:<40} {t.wall:7.3f} {base_t.wall:7.3f} {t.wall / base_t.wall:6.2f}x"
            f" {t.cpu:7.3f} {base_t.cpu:7.3f} {t.cpu / base_t.cpu:6.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
