"""``reconciler build``: flags to request, one-line errors with exit status 2, atomic output.

The amd64 systemd stub stands in for a kernel here (it is an x86-64 EFI PE image); booting
real kernels is the integration tests' job.
"""

from __future__ import annotations

import os
from pathlib import Path

import pefile
import pytest

from reconciler.artifacts import iso as iso_module
from reconciler.artifacts.toolchain import find_stub
from reconciler.cli import main
from reconciler.errors import ToolMissing
from tests.conftest import skip_or_fail


@pytest.fixture
def inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    try:
        stub = find_stub("amd64")
    except ToolMissing as exc:
        skip_or_fail(str(exc))
    monkeypatch.setenv("RECONCILER_CACHE", str(tmp_path / "cache"))
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"\x1f\x8b" + b"x" * 1001)
    motd = tmp_path / "motd"
    motd.write_text("hello\n")
    return {"kernel": stub, "initrd": initrd, "motd": motd, "out": tmp_path / "out"}


def argv(p: dict[str, Path], *extra: str, arch: str = "amd64") -> list[str]:
    return [
        "build", "--arch", arch, "--kernel", str(p["kernel"]), "--initramfs", str(p["initrd"]),
        "--cmdline", "console=ttyS0", "--out", str(p["out"]), *extra,
    ]  # fmt: skip


def test_build_writes_uki_and_iso(
    inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        argv(
            inputs,
            "--file", f"/etc/motd={inputs['motd']}:0600",
            "--symlink", "/usr/local/bin/python=/usr/bin/python3",
            "--dir-override", "/root:0700",
        )
    )  # fmt: skip
    assert code == 0
    out = inputs["out"]
    assert sorted(os.listdir(out)) == ["boot.iso", "uki.efi"]
    printed = capsys.readouterr().out
    assert f"uki {out / 'uki.efi'}" in printed and f"iso {out / 'boot.iso'}" in printed
    pe = pefile.PE(str(out / "uki.efi"), fast_load=True)
    sections = {s.Name.rstrip(b"\0"): s for s in pe.sections}
    initrd = sections[b".initrd"].get_data()[: sections[b".initrd"].Misc_VirtualSize]
    assert initrd.startswith(inputs["initrd"].read_bytes() + b"\0\x1f\x8b")  # 1003 bytes + 1
    iso_bytes = (out / "boot.iso").read_bytes()
    assert iso_bytes.find((out / "uki.efi").read_bytes()) % 2048 == 0
    first = (out / "uki.efi").read_bytes(), iso_bytes
    # Same flags, same bytes.
    assert main(argv(inputs, "--file", f"/etc/motd={inputs['motd']}:0600",
                     "--symlink", "/usr/local/bin/python=/usr/bin/python3",
                     "--dir-override", "/root:0700")) == 0  # fmt: skip
    assert ((out / "uki.efi").read_bytes(), (out / "boot.iso").read_bytes()) == first


BAD = [
    (["--file", "/etc/x={motd}:0abc"],
     "files[0].mode: '0abc' is not an octal mode (--file /etc/x={motd}:0abc)"),
    (["--file", "etc/x={motd}"], "files[0].path: 'etc/x' is not absolute"),
    (["--file", "/etc/x={motd}", "--symlink", "/etc/x=/y"],
     "files[1].path: '/etc/x' is given twice (also files[0].path) (--symlink /etc/x=/y)"),
    (["--symlink", "/l=/t", "--file", "/l/x={motd}"], "files[0].path: '/l/x' is below the symlink"),
    (["--file", "/a/../b={motd}"], "files[0].path: '/a/../b' is not a normal path"),
    (["--file", "/={motd}"], "files[0].path: '/' itself cannot be an overlay entry"),
    (["--file", "/x={motd}:77777"], "files[0].mode: '77777' exceeds 07777"),
    (["--file", "/x=/nonexistent"], "--file /x=/nonexistent: /nonexistent does not exist"),
    (["--file", "/x"], "--file /x: expected DEST=SRC[:MODE]"),
    (["--dir-override", "/root:9"], "dirOverrides[0].mode: '9' is not an octal mode"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_bad_overlay_input(
    inputs: dict[str, Path], capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    extra = [e.format(motd=inputs["motd"]) for e in extra]
    assert main(argv(inputs, *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("reconciler: error: " + message.format(motd=inputs["motd"])), err
    assert not inputs["out"].exists() or os.listdir(inputs["out"]) == []


def test_unknown_arch(inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv(inputs, arch="riscv64")) == 2
    assert capsys.readouterr().err == (
        "reconciler: error: --arch: 'riscv64' is not one of amd64, arm64\n"
    )


def test_missing_kernel(inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    inputs["kernel"] = inputs["out"] / "nope"
    assert main(argv(inputs)) == 2
    assert "--kernel: " in capsys.readouterr().err


def test_kernel_of_the_wrong_arch(
    inputs: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILER_BOOT_TOOLS", str(inputs["out"].parent / "none"))
    assert main(argv(inputs, arch="arm64")) == 2
    assert "kernel: " in capsys.readouterr().err


def test_missing_stub_names_the_package(
    inputs: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    # An arm64 "kernel": the amd64 stub with its machine field patched.
    data = bytearray(inputs["kernel"].read_bytes())
    pe_offset = int.from_bytes(data[0x3C:0x40], "little")
    data[pe_offset + 4 : pe_offset + 6] = (0xAA64).to_bytes(2, "little")
    inputs["kernel"] = tmp_path / "Image"
    inputs["kernel"].write_bytes(bytes(data))
    monkeypatch.setenv("RECONCILER_BOOT_TOOLS", str(tmp_path / "none"))
    assert main(argv(inputs, arch="arm64")) == 2
    err = capsys.readouterr().err
    assert err.startswith("reconciler: error: systemd EFI stub linuxaa64.efi.stub not found")
    assert "hint: run scripts/fetch-boot-tools.sh (apt-get download systemd-boot-efi:arm64" in err


def test_missing_tool_names_the_package(
    inputs: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert main(argv(inputs)) == 2
    assert capsys.readouterr().err == (
        "reconciler: error: grub-mkimage not found (hint: install grub-common)\n"
    )


def test_failure_leaves_nothing_in_out(
    inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(iso_module, "write_iso", explode)
    with pytest.raises(OSError, match="disk full"):
        main(argv(inputs))
    assert os.listdir(inputs["out"]) == []


def test_empty_cmdline_leaves_out_the_section(inputs: dict[str, Path]) -> None:
    args = argv(inputs)
    args[args.index("--cmdline") + 1] = ""
    assert main(args) == 0
    pe = pefile.PE(str(inputs["out"] / "uki.efi"), fast_load=True)
    names = [s.Name.rstrip(b"\0") for s in pe.sections]
    assert names[-3:] == [b".osrel", b".initrd", b".linux"]
