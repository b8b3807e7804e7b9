"""Where the per-architecture boot pieces come from, and the cached GRUB boot image.

The amd64 stub and GRUB modules are Debian packages on an amd64 host. The arm64 ones cannot
be installed there, so ``scripts/fetch-boot-tools.sh`` unpacks them (``apt-get download`` +
``dpkg -x``) into ``build/cache/boot-tools/arm64-root``; every lookup searches ``/`` first,
then ``<boot tools>/<arch>-root`` (``RECONCILER_BOOT_TOOLS`` moves that directory).

The GRUB EFI boot image (a small FAT image with ``EFI/BOOT/BOOT<ARCH>.EFI``) is the same for
every build of an architecture, so it is made once with grub-mkimage, mkfs.vfat and mtools and
kept in the cache directory under a name derived from its inputs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from reconciler.adapters.run import run
from reconciler.errors import InputError, ToolMissing
from reconciler.paths import project_root

LOG = logging.getLogger(__name__)

STUB_DIRS = ("usr/lib/systemd/boot/efi", "lib/systemd/boot/efi")
GRUB_DIRS = ("usr/lib/grub",)

# GRUB reads the UKI from the ISO9660 tree and chainloads it with no arguments: arguments
# would replace the UKI's .cmdline. `search` finds the CD by the volume's fixed date, which
# GRUB's iso9660 driver reports as its UUID (see iso.py), so a stale copy elsewhere is not
# picked up the way a file search could.
GRUB_MODULES = (
    "part_gpt", "part_msdos", "iso9660", "fat", "search", "search_fs_uuid",
    "chain", "boot", "echo", "test",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ArchTools:
    arch: str
    machine: int  # PE machine type
    stub: str  # file name of the systemd EFI stub
    stub_package: str
    grub_target: str  # grub-mkimage -O
    grub_package: str
    efi_boot_name: str  # removable-media path the firmware loads from the El Torito image
    console: str  # serial console the tests and docs put on the cmdline


ARCHES: dict[str, ArchTools] = {
    "amd64": ArchTools(
        "amd64", 0x8664, "linuxx64.efi.stub", "systemd-boot-efi",
        "x86_64-efi", "grub-efi-amd64-bin", "BOOTX64.EFI", "ttyS0",
    ),
    "arm64": ArchTools(
        "arm64", 0xAA64, "linuxaa64.efi.stub", "systemd-boot-efi:arm64",
        "arm64-efi", "grub-efi-arm64-bin:arm64", "BOOTAA64.EFI", "ttyAMA0",
    ),
}  # fmt: skip


def arch_tools(arch: str) -> ArchTools:
    try:
        return ARCHES[arch]
    except KeyError:
        raise InputError(f"architecture: {arch!r} is not one of {', '.join(ARCHES)}") from None


def boot_tools_dir() -> Path:
    env = os.environ.get("RECONCILER_BOOT_TOOLS")
    return Path(env) if env else project_root() / "build" / "cache" / "boot-tools"


def cache_dir() -> Path:
    env = os.environ.get("RECONCILER_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "reconciler"


def _roots(arch: str) -> list[Path]:
    return [Path("/"), boot_tools_dir() / f"{arch}-root"]


def _hint(arch: str, package: str) -> str:
    if arch == "amd64":
        return f"install {package}"
    return f"run scripts/fetch-boot-tools.sh (apt-get download {package} into {boot_tools_dir()})"


def find_stub(arch: str) -> Path:
    tools = arch_tools(arch)
    for root in _roots(arch):
        for d in STUB_DIRS:
            candidate = root / d / tools.stub
            if candidate.is_file():
                return candidate
    raise ToolMissing(
        f"systemd EFI stub {tools.stub} not found", hint=_hint(arch, tools.stub_package)
    )


def find_grub_modules(arch: str) -> Path:
    tools = arch_tools(arch)
    for root in _roots(arch):
        for d in GRUB_DIRS:
            candidate = root / d / tools.grub_target
            if (candidate / "chain.mod").is_file():
                return candidate
    raise ToolMissing(
        f"GRUB {tools.grub_target} modules not found", hint=_hint(arch, tools.grub_package)
    )


def grub_config(iso_uuid: str, uki_path: str) -> str:
    return (
        "set timeout=0\n"
        f"search --no-floppy --fs-uuid --set=root {iso_uuid}\n"
        f"chainloader ($root){uki_path}\n"
        "boot\n"
        f'echo "reconciler: cannot boot {uki_path} from the CD"\n'
    )


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# FAT timestamps of the cached image: fixed so rebuilding the cache gives the same bytes.
FAT_EPOCH = 981173106  # 2001-02-03 04:05:06 UTC, the ISO's fixed date too


def grub_boot_image(arch: str, iso_uuid: str, uki_path: str, *, cache: Path | None = None) -> Path:
    """The El Torito EFI boot image (FAT) holding GRUB for ``arch``, built once and cached."""
    tools = arch_tools(arch)
    modules = find_grub_modules(arch)
    config = grub_config(iso_uuid, uki_path)
    key = hashlib.sha256(
        "\n".join(
            [arch, config, *GRUB_MODULES, _file_digest(modules / "kernel.img"),
             _file_digest(modules / "chain.mod")]
        ).encode()
    ).hexdigest()[:16]  # fmt: skip
    directory = cache or cache_dir()
    target = directory / f"grub-efiboot-{arch}-{key}.img"
    if target.is_file():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".grub-") as tmp:
        work = Path(tmp)
        (work / "grub.cfg").write_text(config)
        efi = work / tools.efi_boot_name
        run(
            ["grub-mkimage", "-O", tools.grub_target, "-d", modules, "-o", efi,
             "-p", "/EFI/BOOT", "-c", work / "grub.cfg", *GRUB_MODULES],
            timeout=120,
        )  # fmt: skip
        os.utime(efi, (FAT_EPOCH, FAT_EPOCH))
        # Room for GRUB plus FAT overhead, whole MiB (a FAT12/16 image under the 32 MiB that
        # an El Torito entry's 16-bit sector count can describe).
        size_kib = (efi.stat().st_size // 1024 + 512 + 1023) // 1024 * 1024
        image = work / "efiboot.img"
        run(
            ["mkfs.vfat", "--invariant", "-i", "52ECC11E", "-n", "RECONCILER",
             "-C", image, str(size_kib)],
            timeout=60,
        )  # fmt: skip
        env = {"SOURCE_DATE_EPOCH": str(FAT_EPOCH), "MTOOLS_SKIP_CHECK": "1"}
        run(["mmd", "-i", image, "::/EFI", "::/EFI/BOOT"], timeout=60, env=env)
        run(
            ["mcopy", "-m", "-i", image, efi, f"::/EFI/BOOT/{tools.efi_boot_name}"],
            timeout=60, env=env,
        )  # fmt: skip
        os.replace(image, target)
    LOG.info("built the GRUB boot image for %s: %s", arch, target)
    return target
