"""The ISO writer: ECMA-119/El Torito structures, then xorriso reads the image back."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from reconciler.artifacts import iso
from tests.conftest import skip_or_fail


def test_plan() -> None:
    lay = iso.plan(1024 * 1024, 5000)
    assert lay.boot_image_sector == 23
    assert lay.uki_sector == 23 + 512
    assert lay.total_sectors == 23 + 512 + 3
    with pytest.raises(ValueError, match="32 MiB"):
        iso.plan(33 * 1024 * 1024, 1)


def test_header_structures() -> None:
    lay = iso.plan(4096, 10_000)
    h = iso.header(lay)
    pvd = h[16 * 2048 : 17 * 2048]
    assert pvd[:8] == b"\x01CD001\x01\x00"
    assert struct.unpack_from("<I", pvd, 80)[0] == lay.total_sectors
    assert struct.unpack_from(">I", pvd, 84)[0] == lay.total_sectors
    assert pvd[830:846] == iso.DATE_DIGITS  # GRUB's volume UUID
    boot = h[17 * 2048 : 18 * 2048]
    assert boot[:7] == b"\x00CD001\x01" and boot[7:30] == b"EL TORITO SPECIFICATION"
    assert struct.unpack_from("<I", boot, 71)[0] == iso.CATALOG_SECTOR
    assert h[18 * 2048 : 18 * 2048 + 7] == b"\xffCD001\x01"
    cat = h[19 * 2048 : 19 * 2048 + 64]
    assert cat[0] == 1 and cat[1] == iso.EFI_PLATFORM and cat[30:32] == b"\x55\xaa"
    assert sum(struct.unpack("<16H", cat[:32])) & 0xFFFF == 0
    indicator, media, _, _, _, count, lba = struct.unpack_from("<BBHBBHI", cat, 32)
    assert (indicator, media, count, lba) == (0x88, 0, 8, 23)


def test_xorriso_reads_it_back(tmp_path: Path) -> None:
    xorriso = shutil.which("xorriso")
    if xorriso is None:
        skip_or_fail("xorriso not installed (scripts/setup.sh installs it)")
    boot = tmp_path / "efiboot.img"
    boot.write_bytes(b"B" * 70_000)
    uki = tmp_path / "uki.efi"
    uki.write_bytes(bytes(range(251)) * 1000)
    out = tmp_path / "boot.iso"
    with open(out, "wb") as f:
        lay = iso.write_iso(f, boot_image=boot, uki=uki)
    assert out.stat().st_size == lay.total_sectors * 2048
    report = subprocess.run(
        [xorriso, "-indev", out, "-report_el_torito", "plain", "-find", "/", "-exec",
         "lsdl", "--", "-osirrox", "on", "-extract", "/UKI.EFI", tmp_path / "back.efi"],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    text = report.stdout.decode() + report.stderr.decode()
    assert "El Torito boot img :   1  UEFI  y   none" in text, text
    assert "/EFIBOOT.IMG" in text
    assert (tmp_path / "back.efi").read_bytes() == uki.read_bytes()
