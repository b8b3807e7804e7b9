"""Build the lab's target disk image: a small UEFI-bootable Debian qcow2 with cloud-init.

Real users point provisioning at a distribution cloud image; this network cannot download
one, so the lab builds its own with the same shape: GPT, an EFI System Partition, and a root
partition typed with the Discoverable Partitions root GUID of its architecture, so
:func:`reconciler.engine.remote.find_root_partition` finds it like it would in a cloud image.

No loop devices and no mounts: the root filesystem is made from a directory with
``mkfs.ext4 -d``, the ESP with ``mkfs.vfat -C`` + mtools, the partition table with
``sgdisk`` on a plain file, and the partitions are copied into place at their offsets.
The ESP boots systemd-boot from the removable-media path (``EFI/BOOT/BOOT<ARCH>.EFI``),
which loads the Debian cloud kernel and initrd with ``root=PARTUUID=...``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.adapters.run import run, which
from reconciler.errors import InputError
from reconciler.imagebuild import debian, inputs
from reconciler.imagebuild.ephemeral import check_host, copy_tree, symlink
from reconciler.imagebuild.manifest import file_record, write_json
from reconciler.paths import images_dir

LOG = logging.getLogger(__name__)

MIB = 1024 * 1024

# Discoverable Partitions Specification type GUIDs.
ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
ROOT_TYPES = {
    "amd64": "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
    "arm64": "b921b045-1df0-41c3-af44-4c6f280d3fae",
}


@dataclass(frozen=True, slots=True)
class ArchTable:
    kernel: str  # Debian's cloud kernel: virtio, SATA/SAS/NVMe, no sound/wifi/GPU
    boot_efi: str  # systemd-boot binary inside systemd-boot-efi
    removable_name: str  # UEFI removable-media boot path name


ARCH = {
    "amd64": ArchTable("linux-image-cloud-amd64", "systemd-bootx64.efi", "BOOTX64.EFI"),
    "arm64": ArchTable("linux-image-cloud-arm64", "systemd-bootaa64.efi", "BOOTAA64.EFI"),
}


@dataclass(frozen=True, slots=True)
class Layout:
    """Partition sizes; the disk is GPT with the ESP first and root second."""

    esp_mib: int = 96
    root_mib: int = 1536

    @property
    def disk_bytes(self) -> int:
        # 1 MiB before the first partition (primary GPT), 1 MiB after the last (backup GPT).
        return (1 + self.esp_mib + self.root_mib + 1) * MIB


def image_name(arch: str) -> str:
    return f"debian-12-{arch}.qcow2"


def stable_guid(arch: str, what: str) -> str:
    """Fixed partition/filesystem GUIDs so two builds of the same inputs are alike."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"reconciler/target-image/{arch}/{what}"))


def cmdline(arch: str) -> str:
    console = debian.ARCHES[arch]["console"]
    return f"root=PARTUUID={stable_guid(arch, 'root-part')} rw console={console},115200n8"


def loader_files(arch: str, kernel_version: str) -> dict[str, str]:
    """systemd-boot's configuration: boot the one entry at once."""
    return {
        "loader/loader.conf": "default debian.conf\ntimeout 0\nconsole-mode keep\n",
        "loader/entries/debian.conf": (
            f"title Debian 12 ({kernel_version})\nlinux /vmlinuz\ninitrd /initrd.img\n"
            f"options {cmdline(arch)}\n"
        ),
    }


def sgdisk_argv(disk: Path, arch: str, layout: Layout) -> list[str]:
    esp_start = 2048  # sectors of 512 bytes: 1 MiB
    root_start = esp_start + layout.esp_mib * 2048
    root_end = root_start + layout.root_mib * 2048 - 1
    return [
        "sgdisk", "--clear",
        f"--disk-guid={stable_guid(arch, 'disk')}",
        f"--new=1:{esp_start}:{root_start - 1}", f"--typecode=1:{ESP_TYPE}",
        f"--partition-guid=1:{stable_guid(arch, 'esp-part')}", "--change-name=1:esp",
        f"--new=2:{root_start}:{root_end}", f"--typecode=2:{ROOT_TYPES[arch]}",
        f"--partition-guid=2:{stable_guid(arch, 'root-part')}", "--change-name=2:root",
        os.fspath(disk),
    ]


def build(
    arch: str,
    out_dir: Path,
    *,
    work_dir: Path,
    deb_cache: Path,
    layout: Layout | None = None,
) -> Path:
    """Build ``out_dir/<arch>/debian-12-<arch>.qcow2`` and its manifest; the image's path."""
    check_host(arch)
    for tool in ("sgdisk", "mkfs.ext4", "mkfs.vfat", "mcopy", "mmd", "qemu-img"):
        which(tool)
    layout = layout or Layout()
    base = images_dir() / "target"
    packages = debian.read_list(base / "packages.txt")
    table = ARCH[arch]
    timings: dict[str, float] = {}
    started = time.monotonic()
    work = work_dir / f"target-{arch}"
    sources = debian.machine_sources()
    chroot = debian.Chroot(work / "root", arch=arch, deb_cache=deb_cache / arch)

    t = time.monotonic()
    chroot.bootstrap(debian.primary_mirror(sources))
    chroot.configure_apt(sources)
    # Our configuration first, so initramfs-tools and sshd see it when they are installed.
    copy_tree(base / "rootfs", chroot.root)
    chroot.apt("update")
    boot_deb = chroot.download(["systemd-boot-efi"])
    chroot.apt("install", table.kernel, *packages)
    installed = chroot.installed()
    timings["packages"] = round(time.monotonic() - t, 1)

    t = time.monotonic()
    root = chroot.root
    kernel_version = _installed_version(installed, table.kernel)
    boot = root / "boot"
    vmlinuz = sorted(boot.glob("vmlinuz-*"))
    initrd = sorted(boot.glob("initrd.img-*"))
    if len(vmlinuz) != 1 or len(initrd) != 1:
        raise InputError(f"expected one kernel and one initrd in {boot}, found "
                         f"{[p.name for p in vmlinuz + initrd]}")
    staging = work / "staging"
    if staging.exists():
        shutil.rmtree(staging)
    debian.extract_deb(boot_deb[0][1], staging)
    boot_efi = staging / "usr/lib/systemd/boot/efi" / table.boot_efi
    _customise(root, arch)
    timings["customise"] = round(time.monotonic() - t, 1)

    t = time.monotonic()
    esp = work / "esp.img"
    _make_esp(esp, layout, {
        f"EFI/BOOT/{table.removable_name}": boot_efi,
        "vmlinuz": vmlinuz[0],
        "initrd.img": initrd[0],
    }, loader_files(arch, kernel_version), work)
    rootfs = work / "root.ext4"
    rootfs.unlink(missing_ok=True)
    run(["mkfs.ext4", "-q", "-F", "-L", "root", "-U", stable_guid(arch, "root-fs"),
         "-E", "root_owner=0:0", "-d", root, rootfs, f"{layout.root_mib}M"], timeout=600)
    disk = work / "disk.raw"
    disk.unlink(missing_ok=True)
    with open(disk, "wb") as handle:
        handle.truncate(layout.disk_bytes)
    run(sgdisk_argv(disk, arch, layout), timeout=60)
    copy_into(esp, disk, 1 * MIB)
    copy_into(rootfs, disk, (1 + layout.esp_mib) * MIB)
    dest = out_dir / arch
    dest.mkdir(parents=True, exist_ok=True)
    image = dest / image_name(arch)
    tmp = dest / f".{image.name}.tmp"
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", disk, tmp], timeout=900)
    os.replace(tmp, image)
    timings["disk"] = round(time.monotonic() - t, 1)
    timings["total"] = round(time.monotonic() - started, 1)

    manifest: dict[str, Any] = {
        "kind": "target-image",
        "architecture": arch,
        "suite": debian.SUITE,
        "inputsDigest": inputs.digest(),
        "image": {**file_record(image), "format": "qcow2", "virtualSize": layout.disk_bytes},
        "partitions": {
            "esp": {"type": ESP_TYPE, "partuuid": stable_guid(arch, "esp-part"),
                    "sizeMiB": layout.esp_mib},
            "root": {"type": ROOT_TYPES[arch], "partuuid": stable_guid(arch, "root-part"),
                     "fsuuid": stable_guid(arch, "root-fs"), "filesystem": "ext4",
                     "sizeMiB": layout.root_mib},
        },
        "cmdline": cmdline(arch),
        "kernel": {"package": table.kernel, "version": kernel_version},
        "packages": [
            {"name": s["Package"], "version": s["Version"], "architecture": s["Architecture"]}
            for s in sorted(installed, key=lambda s: s["Package"])
        ],
        "buildSeconds": timings,
    }
    write_json(dest / f"debian-12-{arch}.manifest.json", manifest)
    for scratch in (esp, rootfs, disk):
        scratch.unlink(missing_ok=True)
    return image


def _installed_version(installed: list[dict[str, str]], package: str) -> str:
    for stanza in installed:
        if stanza["Package"] == package:
            return stanza["Version"]
    raise InputError(f"{package} is not installed in the target image")


def _customise(root: Path, arch: str) -> None:
    for unit, wants in (
        ("systemd-networkd.service", "multi-user.target.wants"),
        ("systemd-networkd.socket", "sockets.target.wants"),
        ("systemd-resolved.service", "multi-user.target.wants"),
        ("ssh.service", "multi-user.target.wants"),
    ):
        symlink(root / "etc/systemd/system" / wants / unit, f"/lib/systemd/system/{unit}")
    symlink(root / "etc/systemd/system/systemd-firstboot.service", "/dev/null")
    part = stable_guid(arch, "root-part")
    debian.write_text(root / "etc/fstab", f"PARTUUID={part} / ext4 errors=remount-ro 0 1\n")
    debian.write_text(root / "etc/hostname", "debian\n")
    # Empty machine-id: systemd generates one at first boot, so clones differ.
    debian.write_text(root / "etc/machine-id", "")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "usr/sbin/policy-rc.d").unlink(missing_ok=True)
    resolv = root / "etc/resolv.conf"
    if not resolv.is_symlink():
        resolv.unlink(missing_ok=True)
        resolv.symlink_to("../run/systemd/resolve/stub-resolv.conf")
    for cache in ("var/cache/apt", "var/lib/apt/lists"):
        for path in (root / cache).glob("*"):
            if path.is_file():
                path.unlink()
    # Device nodes made by debootstrap are not needed: devtmpfs is mounted at boot.
    dev = root / "dev"
    for entry in dev.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _make_esp(
    esp: Path, layout: Layout, files: dict[str, Path], texts: dict[str, str], work: Path
) -> None:
    esp.unlink(missing_ok=True)
    run(["mkfs.vfat", "-F", "32", "-n", "ESP", "-C", esp, str(layout.esp_mib * 1024)],
        timeout=60)
    text_dir = work / "esp-text"
    text_dir.mkdir(parents=True, exist_ok=True)
    all_files = dict(files)
    for rel, text in texts.items():
        path = text_dir / rel.replace("/", "_")
        path.write_text(text)
        all_files[rel] = path
    dirs = sorted({str(Path(rel).parent) for rel in all_files} - {"."})
    expanded = sorted({str(p) for d in dirs for p in [Path(d), *Path(d).parents]} - {"."})
    for directory in expanded:
        run(["mmd", "-i", esp, f"::/{directory}"], timeout=60)
    for rel, path in sorted(all_files.items()):
        run(["mcopy", "-i", esp, path, f"::/{rel}"], timeout=120)


def copy_into(src: Path, disk: Path, offset: int, block: int = MIB) -> None:
    """Write ``src`` into ``disk`` at ``offset``, skipping all-zero blocks (keeps it sparse)."""
    zero = bytes(block)
    with open(src, "rb") as fin, open(disk, "r+b") as fout:
        position = offset
        while chunk := fin.read(block):
            if chunk != zero[: len(chunk)]:
                fout.seek(position)
                fout.write(chunk)
            position += len(chunk)
