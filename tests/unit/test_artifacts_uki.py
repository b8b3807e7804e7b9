"""UKI layout (pure) and assembly read back by pefile and objdump."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pefile
import pytest

from reconciler.artifacts import uki
from reconciler.artifacts.toolchain import ARCHES, find_stub
from reconciler.errors import InputError, ToolFailed, ToolMissing
from tests.conftest import skip_or_fail


def stub_headers(sections: tuple[uki.Section, ...], *, room: int = 400) -> uki.PEHeaders:
    return uki.PEHeaders(
        machine=0x8664, coff_offset=0x84, optional_offset=0x98, section_table=0x188,
        section_alignment=0x200, file_alignment=0x200, size_of_headers=0x188 + room,
        size_of_image=0x20000, sections=sections,
    )  # fmt: skip


def test_layout_places_sections_after_the_stub() -> None:
    stub = stub_headers(
        (uki.Section(".text", 0x1000, 0x1234, 0x400, 0x1400),
         uki.Section(".sbat", 0x3000, 0x10, 0x1800, 0x200)),
    )  # fmt: skip
    placed = uki.layout(stub, 0x2100, [(".osrel", 10), (".cmdline", 0), (".linux", 5000)])
    assert [(s.name, s.virtual_address, s.raw_pointer, s.raw_size) for s in placed] == [
        (".osrel", 0x4000, 0x2200, 0x200),  # after .sbat's raw size, 4 KiB aligned in memory
        (".cmdline", 0x5000, 0x2400, 0),
        (".linux", 0x5000, 0x2400, 0x1400),
    ]


def test_layout_refuses_a_uki_as_stub_and_a_full_header() -> None:
    done = stub_headers((uki.Section(".linux", 0x1000, 1, 0x400, 0x200),))
    with pytest.raises(InputError, match="already has .linux"):
        uki.layout(done, 0x600, [(".osrel", 1)])
    with pytest.raises(InputError, match=r"^\.initrd: 4294967296 bytes do not fit"):
        text = (uki.Section(".text", 0x1000, 1, 0x400, 0x200),)
        uki.layout(stub_headers(text), 0x600, [(".initrd", 1 << 32)])
    full = stub_headers((uki.Section(".text", 0x1000, 1, 0x400, 0x200),), room=40 + 79)
    with pytest.raises(ToolFailed, match="no room for 3 more section headers"):
        uki.layout(full, 0x600, [("a", 1), ("b", 1), ("c", 1)])


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_assembled_uki_reads_back(arch: str, tmp_path: Path) -> None:
    try:
        stub = find_stub(arch)
    except ToolMissing as exc:
        skip_or_fail(str(exc))
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"A" * 5001)
    linux = tmp_path / "linux"
    linux.write_bytes(bytes(range(256)) * 100)
    out = tmp_path / "uki.efi"
    sections = [
        (".osrel", [b"ID=test\n"]),
        (".cmdline", [b"console=ttyS0"]),
        (".initrd", [initrd, b"\0\0\0", b"overlay"]),
        (".linux", [linux]),
    ]
    with open(out, "wb") as f:
        uki.assemble(stub, sections, f)  # type: ignore[arg-type]
    uki.verify(out, machine=ARCHES[arch].machine, expect=[".osrel", ".linux"])
    pe = pefile.PE(str(out), fast_load=True)
    got = {s.Name.rstrip(b"\0").decode(): s for s in pe.sections}
    assert got[".cmdline"].get_data()[: got[".cmdline"].Misc_VirtualSize] == b"console=ttyS0"
    initrd_data = got[".initrd"].get_data()[: got[".initrd"].Misc_VirtualSize]
    assert initrd_data == b"A" * 5001 + b"\0\0\0overlay"
    assert got[".linux"].get_data()[: got[".linux"].Misc_VirtualSize] == linux.read_bytes()
    assert pe.OPTIONAL_HEADER.SizeOfImage >= (
        got[".linux"].VirtualAddress + got[".linux"].Misc_VirtualSize
    )
    # Nothing pefile complains about beyond what the stub itself carries.
    stub_warnings = set(pefile.PE(str(stub)).get_warnings())
    assert set(pefile.PE(str(out)).get_warnings()) <= stub_warnings
    names = [s.Name.rstrip(b"\0").decode() for s in pe.sections]
    assert names[-4:] == [".osrel", ".cmdline", ".initrd", ".linux"]
    objdump = shutil.which("objdump")
    if objdump and arch == "amd64":
        text = subprocess.run([objdump, "-h", out], capture_output=True, check=True).stdout
        assert b".initrd" in text and b".linux" in text


def test_verify_refuses_overlapping_sections(tmp_path: Path) -> None:
    try:
        stub = find_stub("amd64")
    except ToolMissing as exc:
        skip_or_fail(str(exc))
    out = tmp_path / "uki.efi"
    buf = io.BytesIO()
    added = uki.assemble(stub, [(".osrel", [b"x" * 5000]), (".linux", [b"y" * 100])], buf)
    data = bytearray(buf.getvalue())
    # Move .linux's virtual address into .osrel.
    head = uki.parse_pe(bytes(data[:4096]), what="x")
    index = len(head.sections) - 1
    offset = head.section_table + index * uki.SECTION_HEADER.size + 12
    data[offset : offset + 4] = added[0].virtual_address.to_bytes(4, "little")
    out.write_bytes(bytes(data))
    with pytest.raises(ToolFailed, match="overlap in memory"):
        uki.verify(out, machine=0x8664, expect=[])
