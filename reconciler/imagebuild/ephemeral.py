"""Build the ephemeral OS: kernel + one initramfs that is a whole Debian system in RAM.

Steps (timed into the manifest): debootstrap minbase -> apt sources of this machine plus
non-free-firmware -> download the kernel and firmware packages -> install the pinned package
list -> unpack the kernel, keep the listed modules and their dependencies -> keep the
firmware those modules request -> copy ``images/ephemeral/rootfs`` in, enable units ->
prune -> newc cpio -> zstd (or gzip) -> ``OUT/<arch>/{vmlinuz,initramfs}-<arch>[.img]`` and
``manifest.json``, each written to a temporary name and renamed.

The result boots with no ``root=`` and no ``switch_root``: ``/init`` is systemd, and the
kernel's rootfs (tmpfs, half the RAM) is the root filesystem.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.adapters.run import run, which
from reconciler.errors import InputError, ToolFailed, ToolMissing
from reconciler.imagebuild import debian, inputs, modules
from reconciler.imagebuild.manifest import file_record, write_json
from reconciler.paths import images_dir

LOG = logging.getLogger(__name__)

COMPRESSORS: dict[str, list[str]] = {
    # zstd -10: 92 MiB in ~6 s; -19 saves 11 MiB for 20x the time (LAB.md).
    "zstd": ["zstd", "-q", "-10", "-T0", "-c"],
    "gzip": ["gzip", "-6", "-n", "-c"],
}

# Kernel metapackage per architecture; its first dependency is the versioned image.
KERNEL_META = {"amd64": "linux-image-amd64", "arm64": "linux-image-arm64"}

# (unit, directory under /etc/systemd/system it is wanted by). Units shipped in
# images/ephemeral/rootfs live in /etc/systemd/system, packaged ones in /lib/systemd/system.
ENABLE: tuple[tuple[str, str], ...] = (
    ("dhcp-discover.service", "sysinit.target.wants"),
    ("checkin.service", "multi-user.target.wants"),
    ("systemd-networkd.service", "multi-user.target.wants"),
    ("systemd-networkd.socket", "sockets.target.wants"),
    ("systemd-networkd-wait-online.service", "network-online.target.wants"),
    ("systemd-resolved.service", "multi-user.target.wants"),
    ("ssh.service", "multi-user.target.wants"),
    ("serial-getty@{console}.service", "getty.target.wants"),
)

# Never useful in a RAM-resident OS that lives minutes to hours; firstboot would prompt on the
# console because the machine-id is empty on every boot.
MASK: tuple[str, ...] = (
    "systemd-firstboot.service",
    "ssh.socket",  # ssh.service is enabled; the socket would conflict with it
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "mdcheck_start.timer",
    "mdcheck_continue.timer",
    "mdmonitor-oneshot.timer",
    "systemd-timesyncd.service",
)

# Libraries pruned only if no remaining binary links them (see prune.txt).
PRUNE_GUARDED = ("libicu",)


@dataclass
class BuildContext:
    """Mutable state of one build (the spec is frozen in the image lists)."""

    arch: str
    out_dir: Path
    work: Path
    deb_cache: Path
    compression: str
    measure_other: bool
    timings: dict[str, float] = field(default_factory=dict)

    def step(self, name: str, started: float) -> None:
        self.timings[name] = round(time.monotonic() - started, 1)
        LOG.info("images: %s %s done in %.1f s", self.arch, name, self.timings[name])


@dataclass(frozen=True, slots=True)
class EphemeralSpec:
    packages: tuple[str, ...]
    firmware_packages: tuple[str, ...]
    module_patterns: tuple[str, ...]
    prune: tuple[str, ...]
    rootfs: Path


def load_spec(root: Path | None = None) -> EphemeralSpec:
    base = (root or images_dir()) / "ephemeral"
    return EphemeralSpec(
        packages=tuple(debian.read_list(base / "packages.txt")),
        firmware_packages=tuple(debian.read_list(base / "firmware.txt")),
        module_patterns=tuple(debian.read_list(base / "modules.txt")),
        prune=tuple(debian.read_list(base / "prune.txt")),
        rootfs=base / "rootfs",
    )


def artifact_names(arch: str) -> dict[str, str]:
    """The names the build service looks up in ``DIR/<arch>/`` (shared constant)."""
    return {
        "kernel": f"vmlinuz-{arch}",
        "initramfs": f"initramfs-{arch}.img",
        "manifest": "manifest.json",
    }


def check_host(arch: str) -> None:
    """Everything the build needs, checked before the first side effect."""
    if arch not in debian.ARCHES:
        raise InputError(f"--arch: {arch!r} is not one of {', '.join(debian.ARCHES)}")
    if os.geteuid() != 0:
        raise ToolMissing("building images needs root (debootstrap, chroot, mknod)")
    for tool in ("debootstrap", "unshare", "chroot", "cpio", "zstd", "gzip", "dpkg-deb", "depmod"):
        which(tool)
    host = os.uname().machine
    if debian.ARCHES[arch]["uname"] != host and not foreign_arch_supported(arch):
        emulator = debian.ARCHES[arch]["qemu_user"]
        raise ToolMissing(
            f"cannot build {arch} on {host}: package maintainer scripts must run in an {arch} "
            f"chroot, and no binfmt_misc handler for {emulator} is registered",
            hint="install qemu-user-static and binfmt-support with binfmt_misc mounted",
        )


def foreign_arch_supported(arch: str) -> bool:
    handler = Path("/proc/sys/fs/binfmt_misc") / f"qemu-{debian.ARCHES[arch]['uname']}"
    try:
        return handler.read_text().startswith("enabled")
    except OSError:
        return False


def build(
    arch: str,
    out_dir: Path,
    *,
    work_dir: Path,
    deb_cache: Path,
    compression: str = "zstd",
    measure_other: bool = True,
    spec: EphemeralSpec | None = None,
) -> Path:
    """Build the base artifacts for ``arch`` into ``out_dir/<arch>/``; the manifest's path."""
    if compression not in COMPRESSORS:
        raise InputError(f"--compression: {compression!r} is not one of {', '.join(COMPRESSORS)}")
    check_host(arch)
    spec = spec or load_spec()
    ctx = BuildContext(arch, out_dir, work_dir / f"ephemeral-{arch}", deb_cache / arch,
                       compression, measure_other)
    started = time.monotonic()
    sources = debian.machine_sources()
    chroot = debian.Chroot(ctx.work / "root", arch=arch, deb_cache=ctx.deb_cache)

    t = time.monotonic()
    chroot.bootstrap(debian.primary_mirror(sources))
    chroot.configure_apt(sources)
    chroot.apt("update")
    ctx.step("debootstrap", t)

    # Download before systemd-resolved replaces the chroot's resolv.conf with a dangling link.
    t = time.monotonic()
    kernel_pkg = debian.first_dependency(chroot.show([KERNEL_META[arch]])[0]["Depends"])
    kernel_deb = chroot.download([kernel_pkg])
    firmware_debs = chroot.download(list(spec.firmware_packages))
    chroot.apt("install", *spec.packages)
    installed = chroot.installed()
    ctx.step("packages", t)

    t = time.monotonic()
    root = chroot.root
    staging = ctx.work / "staging"
    if staging.exists():
        shutil.rmtree(staging)
    kernel_stanza, kernel_path = kernel_deb[0]
    debian.extract_deb(kernel_path, staging / "kernel")
    for _, deb in firmware_debs:
        debian.extract_deb(deb, staging / "firmware")
    kver, vmlinuz = find_kernel(staging / "kernel")
    module_stats = install_modules(staging / "kernel", root, kver, spec.module_patterns)
    firmware_files = install_firmware(root, staging / "firmware", kver)
    ctx.step("kernel", t)

    t = time.monotonic()
    customise(root, spec.rootfs, arch)
    pruned = prune(root, spec.prune)
    ctx.step("customise", t)

    t = time.monotonic()
    cpio = ctx.work / "initramfs.cpio"
    make_cpio(root, cpio)
    ctx.step("cpio", t)

    names = artifact_names(arch)
    dest = out_dir / arch
    dest.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    t = time.monotonic()
    initramfs = dest / names["initramfs"]
    compress(cpio, initramfs, compression)
    sizes[compression] = initramfs.stat().st_size
    ctx.step(f"compress-{compression}", t)
    if measure_other:
        other = "gzip" if compression == "zstd" else "zstd"
        t = time.monotonic()
        scratch = ctx.work / f"initramfs.{other}"
        compress(cpio, scratch, other)
        sizes[other] = scratch.stat().st_size
        scratch.unlink()
        ctx.step(f"compress-{other}", t)
    kernel_out = dest / names["kernel"]
    copy_atomic(vmlinuz, kernel_out)
    ctx.timings["total"] = round(time.monotonic() - started, 1)

    manifest: dict[str, Any] = {
        "kind": "ephemeral-os",
        "architecture": arch,
        "suite": debian.SUITE,
        "mirror": debian.primary_mirror(sources),
        "inputsDigest": inputs.digest(),
        "kernel": {
            **file_record(kernel_out),
            "package": kernel_stanza["Package"],
            "version": kernel_stanza["Version"],
            "release": kver,
        },
        "initramfs": {
            **file_record(initramfs),
            "compression": compression,
            "uncompressedSize": cpio.stat().st_size,
            "compressedSizes": sizes,
        },
        "cmdline": f"console={debian.ARCHES[arch]['console']},115200n8",
        "packages": [
            {"name": s["Package"], "version": s["Version"], "architecture": s["Architecture"],
             "installedSizeKiB": int(s.get("Installed-Size") or 0)}
            for s in sorted(installed, key=lambda s: s["Package"])
        ],
        "firmwarePackages": [
            {"name": s["Package"], "version": s["Version"], "size": int(s.get("Size") or 0),
             "sha256": s.get("SHA256")}
            for s, _ in firmware_debs
        ],
        "modules": module_stats,
        "firmwareFiles": firmware_files,
        "pruned": pruned,
        "buildSeconds": ctx.timings,
    }
    manifest_path = dest / names["manifest"]
    write_json(manifest_path, manifest)
    cpio.unlink()
    return manifest_path


def find_kernel(unpacked: Path) -> tuple[str, Path]:
    """(release, vmlinuz path) of an unpacked ``linux-image-*`` package."""
    candidates = sorted((unpacked / "boot").glob("vmlinu[xz]-*"))
    if len(candidates) != 1:
        raise ToolFailed(f"expected one kernel in {unpacked}/boot, found {len(candidates)}")
    return candidates[0].name.split("-", 1)[1], candidates[0]


def _modules_dir(tree: Path, kver: str) -> Path:
    for base in ("lib/modules", "usr/lib/modules"):
        if (tree / base / kver).is_dir():
            return tree / base / kver
    raise ToolFailed(f"no modules for {kver} under {tree}")


def install_modules(
    kernel_tree: Path, root: Path, kver: str, patterns: tuple[str, ...]
) -> dict[str, int]:
    """Copy the selected modules (plus dependencies) into ``root`` and run depmod there."""
    source = _modules_dir(kernel_tree, kver)
    run(["depmod", "-b", kernel_tree, kver], timeout=300)
    deps = modules.parse_modules_dep((source / "modules.dep").read_text())
    roots = modules.selected(deps, patterns)
    kept = modules.closure(roots, deps)
    dest = root / "usr/lib/modules" / kver
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for rel in sorted(kept):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, dest / rel)
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (source / name).exists():
            shutil.copy2(source / name, dest / name)
    run(["depmod", "-b", root, kver], timeout=300)
    return {"kept": len(kept), "total": len(deps)}


def install_firmware(root: Path, firmware_tree: Path, kver: str) -> int:
    """Copy the firmware files the kept modules request; how many were copied."""
    fw_root = next(
        (firmware_tree / d for d in ("lib/firmware", "usr/lib/firmware")
         if (firmware_tree / d).is_dir()),
        None,
    )
    if fw_root is None:
        return 0
    mod_dir = _modules_dir(root, kver)
    requested: set[str] = set()
    for ko in mod_dir.rglob("*.ko"):
        requested.update(modules.modinfo_firmware(ko.read_bytes()))
    available = [str(p.relative_to(fw_root)) for p in fw_root.rglob("*") if not p.is_dir()]
    chosen = modules.match_firmware(requested, available)
    dest = root / "usr/lib/firmware"
    for rel in sorted(chosen):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        # Firmware packages use symlinks between versions; store the bytes, not the link.
        shutil.copyfile(fw_root / rel, target, follow_symlinks=True)
    return len(chosen)


def customise(root: Path, overlay: Path, arch: str) -> None:
    """Our files, units enabled and masked, ``/init``, machine-id, root's SSH directory."""
    copy_tree(overlay, root)
    console = debian.ARCHES[arch]["console"]
    etc_units = root / "etc/systemd/system"
    for unit_template, wants in ENABLE:
        unit = unit_template.format(console=console)
        template = unit.split("@", 1)[0] + "@.service" if "@" in unit else unit
        if (etc_units / template).exists():
            target = f"/etc/systemd/system/{template}"
        elif (root / "lib/systemd/system" / template).exists():
            target = f"/lib/systemd/system/{template}"
        else:
            raise ToolFailed(f"unit {template} to enable is not in the image")
        symlink(root / "etc/systemd/system" / wants / unit, target)
    for unit in MASK:
        symlink(etc_units / unit, "/dev/null")
    # No switch_root: the kernel runs /init from the initramfs, and that is systemd itself.
    # /etc/initrd-release must not exist or systemd would behave as an initrd.
    symlink(root / "init", "/lib/systemd/systemd")
    (root / "etc/initrd-release").unlink(missing_ok=True)
    (root / "usr/sbin/policy-rc.d").unlink(missing_ok=True)
    resolv = root / "etc/resolv.conf"
    if not resolv.is_symlink():
        resolv.unlink(missing_ok=True)
        resolv.symlink_to("../run/systemd/resolve/stub-resolv.conf")
    debian.write_text(root / "etc/fstab", "# the root filesystem is the initramfs in RAM\n")
    debian.write_text(root / "etc/hostname", "ephemeral\n")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(root / "root", 0o700)
    os.chmod(ssh_dir, 0o700)


def copy_tree(src: Path, dest: Path) -> None:
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        target = dest / rel
        if path.is_dir() and not path.is_symlink():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        if path.is_symlink():
            target.symlink_to(os.readlink(path))
        else:
            shutil.copyfile(path, target)
            os.chmod(target, 0o755 if os.access(path, os.X_OK) else 0o644)


def symlink(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def prune(root: Path, globs: tuple[str, ...]) -> list[str]:
    """Delete paths matching ``globs``; guarded libraries only when nothing links them."""
    removed: list[str] = []
    for pattern in globs:
        for path in sorted(root.glob(pattern)):
            rel = str(path.relative_to(root))
            if any(g in path.name for g in PRUNE_GUARDED):
                continue
            _remove(path)
            removed.append(rel)
    for guarded in PRUNE_GUARDED:
        candidates = [p for g in globs if guarded in g for p in sorted(root.glob(g))]
        if not candidates:
            continue
        users = _linkers(root, guarded.encode(), exclude=set(candidates))
        if users:
            LOG.info("images: keeping %s: linked by %s", guarded, ", ".join(users[:5]))
            continue
        for path in candidates:
            if path.exists() or path.is_symlink():
                _remove(path)
                removed.append(str(path.relative_to(root)))
    return sorted(set(removed))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _linkers(root: Path, needle: bytes, *, exclude: set[Path]) -> list[str]:
    """ELF files under ``root`` whose bytes mention ``needle`` (a NEEDED library name)."""
    users = []
    for base in ("usr/bin", "usr/sbin", "usr/lib", "usr/libexec"):
        for path in (root / base).rglob("*"):
            if path in exclude or path.is_symlink() or not path.is_file():
                continue
            try:
                with open(path, "rb") as handle:
                    if handle.read(4) != b"\x7fELF":
                        continue
                    handle.seek(0)
                    if needle in handle.read():
                        users.append(str(path.relative_to(root)))
            except OSError:
                continue
    return users


def make_cpio(root: Path, out: Path) -> None:
    """A newc archive of ``root`` with sorted names and renumbered inodes (reproducible)."""
    names = ["."]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for name in sorted(dirnames + filenames):
            names.append(os.path.normpath(os.path.join(rel, name)))
    listing = "\0".join(sorted(set(names))).encode() + b"\0"
    tmp = out.with_name(out.name + ".tmp")
    run(
        ["cpio", "--quiet", "-o", "-0", "-H", "newc", "--reproducible", "--renumber-inodes"],
        cwd=root, input=listing, stdout_path=tmp, timeout=900,
    )
    os.replace(tmp, out)


def compress(src: Path, dest: Path, method: str) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp")
    argv: list[str | os.PathLike[str]] = [*COMPRESSORS[method], src]
    run(argv, stdout_path=tmp, timeout=1800)
    os.replace(tmp, dest)


def copy_atomic(src: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
