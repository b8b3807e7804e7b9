"""A UEFI-bootable ISO 9660 image around a UKI, written directly (layout pure, copy streamed).

What a CD-booting firmware needs (ECMA-119 + El Torito 1.0):

    sector 0-15   system area (zeros)
    16            primary volume descriptor
    17            El Torito boot record -> boot catalog
    18            volume descriptor set terminator
    19            boot catalog: validation entry (platform 0xEF = EFI), default entry
                  (no emulation) -> the FAT boot image
    20, 21        path tables (little-, big-endian): the root directory only
    22            root directory: ".", "..", EFIBOOT.IMG;1, UKI.EFI;1
    23...         the FAT boot image (GRUB as EFI/BOOT/BOOT<ARCH>.EFI), then the UKI

The firmware mounts the FAT image named by the boot catalog and starts GRUB; GRUB's config
(toolchain.grub_config) finds this volume by its UUID and chainloads ``/UKI.EFI`` with no
arguments. GRUB's iso9660 driver derives the UUID from the volume modification date, which is
fixed here (:data:`ISO_UUID`), as are all other dates: the same inputs give the same bytes.

xorriso needs about 1 s for a 200 MB UKI (one read per 2 KiB block); this writes ~48 KiB of
metadata and then copies the two files with copy_file_range, close to ``cp``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from reconciler.artifacts.uki import write_parts

SECTOR = 2048
SYSTEM_AREA = 16
PVD_SECTOR = 16
BOOT_RECORD_SECTOR = 17
TERMINATOR_SECTOR = 18
CATALOG_SECTOR = 19
L_PATH_SECTOR = 20
M_PATH_SECTOR = 21
ROOT_SECTOR = 22
FIRST_FILE_SECTOR = 23

VOLUME_ID = "RECONCILER"
BOOT_IMAGE_NAME = "EFIBOOT.IMG"
UKI_NAME = "UKI.EFI"
# The path GRUB chainloads (its iso9660 driver matches names without case, drops ";1").
UKI_PATH = "/" + UKI_NAME
# 2001-02-03 04:05:06.07 UTC: every date in the image; GRUB reports it as the volume UUID.
DATE_DIGITS = b"2001020304050607"
ISO_UUID = "2001-02-03-04-05-06-07"
DIR_DATE = bytes([101, 2, 3, 4, 5, 6, 0])  # years since 1900, month, day, h, m, s, UTC
EFI_PLATFORM = 0xEF
MAX_BOOT_IMAGE = 0xFFFF * 512  # El Torito's sector count is 16 bits of 512-byte sectors


@dataclass(frozen=True, slots=True)
class IsoLayout:
    boot_image_sector: int
    boot_image_size: int
    uki_sector: int
    uki_size: int
    total_sectors: int


def _sectors(size: int) -> int:
    return -(-size // SECTOR)


def plan(boot_image_size: int, uki_size: int) -> IsoLayout:
    if boot_image_size > MAX_BOOT_IMAGE:
        raise ValueError(f"boot image of {boot_image_size} bytes exceeds El Torito's 32 MiB")
    uki_sector = FIRST_FILE_SECTOR + _sectors(boot_image_size)
    return IsoLayout(
        boot_image_sector=FIRST_FILE_SECTOR,
        boot_image_size=boot_image_size,
        uki_sector=uki_sector,
        uki_size=uki_size,
        total_sectors=uki_sector + _sectors(uki_size),
    )


def _both16(v: int) -> bytes:
    return struct.pack("<H", v) + struct.pack(">H", v)


def _both32(v: int) -> bytes:
    return struct.pack("<I", v) + struct.pack(">I", v)


def _padded(text: str, length: int) -> bytes:
    return text.encode("ascii").ljust(length, b" ")


def _dir_record(name: bytes, sector: int, size: int, *, directory: bool) -> bytes:
    length = 33 + len(name) + (1 - len(name) % 2)  # records have even length
    record = (
        bytes([length, 0])
        + _both32(sector)
        + _both32(size)
        + DIR_DATE
        + bytes([2 if directory else 0, 0, 0])
        + _both16(1)
        + bytes([len(name)])
        + name
    )
    return record.ljust(length, b"\0")


def _vol_date() -> bytes:
    return DATE_DIGITS + b"\0"  # 16 digits + offset from GMT in 15-minute units


def _pvd(lay: IsoLayout) -> bytes:
    root = _dir_record(b"\0", ROOT_SECTOR, SECTOR, directory=True)
    pvd = (
        b"\x01CD001\x01\x00"
        + _padded("", 32)  # system identifier
        + _padded(VOLUME_ID, 32)
        + bytes(8)
        + _both32(lay.total_sectors)
        + bytes(32)
        + _both16(1)  # volume set size
        + _both16(1)  # volume sequence number
        + _both16(SECTOR)
        + _both32(10)  # path table size: the root entry only
        + struct.pack("<I", L_PATH_SECTOR)
        + bytes(4)
        + struct.pack(">I", M_PATH_SECTOR)
        + bytes(4)
        + root
        + _padded("", 128)  # volume set
        + _padded("", 128)  # publisher
        + _padded("", 128)  # data preparer
        + _padded("RECONCILER", 128)  # application
        + _padded("", 37 * 3)  # copyright, abstract, bibliographic files
        + _vol_date()  # creation
        + _vol_date()  # modification: GRUB's UUID
        + b"0" * 16
        + b"\0"  # expiration: none
        + _vol_date()  # effective
        + b"\x01\x00"
    )
    assert len(pvd) == 883, len(pvd)
    return pvd.ljust(SECTOR, b"\0")


def _boot_record() -> bytes:
    record = b"\x00CD001\x01" + b"EL TORITO SPECIFICATION".ljust(32, b"\0") + bytes(32)
    return (record + struct.pack("<I", CATALOG_SECTOR)).ljust(SECTOR, b"\0")


def _terminator() -> bytes:
    return b"\xffCD001\x01".ljust(SECTOR, b"\0")


def _catalog(lay: IsoLayout) -> bytes:
    validation = bytearray(struct.pack("<BBH24sHBB", 1, EFI_PLATFORM, 0, b"", 0, 0x55, 0xAA))
    # The 16-bit words of the validation entry sum to zero.
    checksum = -sum(struct.unpack("<16H", bytes(validation))) & 0xFFFF
    struct.pack_into("<H", validation, 28, checksum)
    count = -(-lay.boot_image_size // 512)
    default = struct.pack("<BBHBBHI20s", 0x88, 0, 0, 0, 0, count, lay.boot_image_sector, b"")
    return (bytes(validation) + default).ljust(SECTOR, b"\0")


def _path_table(big_endian: bool) -> bytes:
    fmt = ">BBIH" if big_endian else "<BBIH"
    return (struct.pack(fmt, 1, 0, ROOT_SECTOR, 1) + b"\0\0").ljust(SECTOR, b"\0")


def _root(lay: IsoLayout) -> bytes:
    records = (
        _dir_record(b"\0", ROOT_SECTOR, SECTOR, directory=True)
        + _dir_record(b"\1", ROOT_SECTOR, SECTOR, directory=True)
        + _dir_record(
            f"{BOOT_IMAGE_NAME};1".encode(), lay.boot_image_sector, lay.boot_image_size,
            directory=False,
        )
        + _dir_record(f"{UKI_NAME};1".encode(), lay.uki_sector, lay.uki_size, directory=False)
    )  # fmt: skip
    return records.ljust(SECTOR, b"\0")


def header(lay: IsoLayout) -> bytes:
    """Sectors 0 to FIRST_FILE_SECTOR - 1 (pure)."""
    out = (
        bytes(SYSTEM_AREA * SECTOR)
        + _pvd(lay)
        + _boot_record()
        + _terminator()
        + _catalog(lay)
        + _path_table(False)
        + _path_table(True)
        + _root(lay)
    )
    assert len(out) == FIRST_FILE_SECTOR * SECTOR
    return out


def _pad(n: int) -> bytes:
    return b"\0" * (-n % SECTOR)


def write_iso(out: BinaryIO, *, boot_image: Path, uki: Path) -> IsoLayout:
    """Write the ISO to ``out`` (empty, at offset 0)."""
    lay = plan(boot_image.stat().st_size, uki.stat().st_size)
    out.write(header(lay))
    write_parts(out, [boot_image])
    out.write(_pad(lay.boot_image_size))
    write_parts(out, [uki])
    out.write(_pad(lay.uki_size))
    out.flush()
    return lay
