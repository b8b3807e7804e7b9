"""Pure parts of the image builds: apt sources, package stanzas, module and firmware choice,
the target disk layout, the inputs digest."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from reconciler.errors import InputError, ToolMissing
from reconciler.imagebuild import debian, ephemeral, inputs, modules, target

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://example.invalid/disabled
Suites: bookworm
Components: main
Enabled: no
"""


def test_deb822_sources_keep_enabled_binary_stanzas() -> None:
    sources = debian.parse_deb822_sources(DEB822)
    assert [s.uri for s in sources] == [
        "http://deb.debian.org/debian", "http://deb.debian.org/debian-security"]
    assert sources[0].suites == ("bookworm", "bookworm-updates")
    assert sources[0].signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"
    assert debian.primary_mirror(sources) == "http://deb.debian.org/debian"


def test_chroot_sources_add_non_free_firmware_once() -> None:
    source = debian.parse_deb822_sources(DEB822)[0]
    text = source.deb822(["non-free-firmware", "main"])
    assert "Components: main non-free-firmware\n" in text
    assert "Suites: bookworm bookworm-updates\n" in text


def test_one_line_sources() -> None:
    text = "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m/debian/ bookworm main contrib\n"
    (source,) = debian.parse_one_line_sources(text)
    assert source.uri == "http://m/debian"
    assert source.components == ("main", "contrib")


def test_machine_sources_require_the_suite(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "other.sources").write_text(
        "Types: deb\nURIs: http://m\nSuites: trixie\nComponents: main\n")
    with pytest.raises(ToolMissing, match="no apt source for Debian bookworm"):
        debian.machine_sources(tmp_path)
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    found = debian.machine_sources(tmp_path)
    assert {s.uri for s in found} == {
        "http://deb.debian.org/debian", "http://deb.debian.org/debian-security"}


def test_read_list_rejects_two_words(tmp_path: Path) -> None:
    path = tmp_path / "packages.txt"
    path.write_text("# c\nsystemd  # init\n\ncurl wget\n")
    with pytest.raises(InputError, match=r"packages.txt:4: one entry per line"):
        debian.read_list(path)
    path.write_text("systemd\ncurl=7.88.1-10\n")
    assert debian.read_list(path) == ["systemd", "curl=7.88.1-10"]


def test_package_stanzas_and_kernel_dependency() -> None:
    text = (
        "Package: linux-image-amd64\nVersion: 6.1.119-1\nDepends: linux-image-6.1.0-28-amd64"
        " (= 6.1.119-1)\nDescription: Linux\n for 64-bit PCs\n\n"
        "Package: curl\nVersion: 7.88.1-10+deb12u8\n"
    )
    stanzas = debian.parse_package_stanzas(text)
    assert stanzas[0]["Description"] == "Linux\nfor 64-bit PCs"
    assert debian.first_dependency(stanzas[0]["Depends"]) == "linux-image-6.1.0-28-amd64"
    assert debian.first_dependency("a | b (>= 1), c") == "a"
    assert stanzas[1] == {"Package": "curl", "Version": "7.88.1-10+deb12u8"}


MODULES_DEP = """\
kernel/drivers/net/ethernet/intel/ice/ice.ko: kernel/drivers/dca/dca.ko kernel/net/core/ptp.ko
kernel/drivers/dca/dca.ko:
kernel/net/core/ptp.ko: kernel/drivers/pps/pps_core.ko
kernel/drivers/pps/pps_core.ko:
kernel/drivers/virtio/virtio_pci.ko:
kernel/fs/binfmt_misc.ko:
kernel/sound/core/snd.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko
kernel/drivers/net/net_failover.ko:
"""


def test_module_selection_follows_dependencies() -> None:
    deps = modules.parse_modules_dep(MODULES_DEP)
    roots = modules.selected(deps, ["drivers/net/ethernet", "fs/binfmt_misc.ko",
                                    "drivers/net/virtio_net.ko", "drivers/virtio"])
    assert "kernel/drivers/net/net_failover.ko" not in roots
    kept = modules.closure(roots, deps)
    assert kept == {
        "kernel/drivers/net/ethernet/intel/ice/ice.ko", "kernel/drivers/dca/dca.ko",
        "kernel/net/core/ptp.ko", "kernel/drivers/pps/pps_core.ko",
        "kernel/drivers/virtio/virtio_pci.ko", "kernel/fs/binfmt_misc.ko",
        "kernel/drivers/net/virtio_net.ko", "kernel/drivers/net/net_failover.ko",
    }


def test_selection_does_not_match_name_prefixes() -> None:
    deps = {"kernel/drivers/net/virtio_net_extra.ko": (), "kernel/drivers/netx/a.ko": ()}
    assert modules.selected(deps, ["drivers/net/virtio_net.ko", "drivers/net"]) == {
        "kernel/drivers/net/virtio_net_extra.ko"}


def test_modinfo_firmware_and_matching() -> None:
    blob = (b"\x7fELF....\0license=GPL\0firmware=bnx2x/bnx2x-e2-7.13.21.0.fw\0"
            b"firmware=intel/ice/ddp/ice.pkg\0firmware=rtl_nic/rtl8168*.fw\0firmware=\xff\0")
    requested = modules.modinfo_firmware(blob)
    assert requested == ["bnx2x/bnx2x-e2-7.13.21.0.fw", "intel/ice/ddp/ice.pkg",
                         "rtl_nic/rtl8168*.fw"]
    available = ["bnx2x/bnx2x-e2-7.13.21.0.fw", "bnx2x/bnx2x-e1-7.13.21.0.fw",
                 "intel/ice/ddp/ice.pkg.xz", "rtl_nic/rtl8168g-2.fw", "rtl_nic/rtl8125a-3.fw"]
    assert modules.match_firmware(requested, available) == {
        "bnx2x/bnx2x-e2-7.13.21.0.fw", "intel/ice/ddp/ice.pkg.xz", "rtl_nic/rtl8168g-2.fw"}


def test_repository_lists_parse() -> None:
    spec = ephemeral.load_spec()
    for needed in ("cloud-init", "openssh-server", "qemu-utils", "lvm2", "mdadm", "gdisk",
                   "parted", "xfsprogs", "dosfstools", "e2fsprogs", "curl", "python3",
                   "iproute2", "systemd-resolved"):
        assert needed in spec.packages
    for vendor in ("firmware-misc-nonfree", "firmware-bnx2x", "firmware-qlogic"):
        assert vendor in spec.firmware_packages
    assert (spec.rootfs / "usr/local/bin/hw-inventory").stat().st_mode & 0o111
    assert debian.read_list(Path(ephemeral.images_dir()) / "target/packages.txt")


def test_artifact_names_are_the_shared_constants() -> None:
    assert ephemeral.artifact_names("arm64") == {
        "kernel": "vmlinuz-arm64", "initramfs": "initramfs-arm64.img",
        "manifest": "manifest.json"}


def test_check_host_rejects_unknown_arch() -> None:
    with pytest.raises(InputError, match="--arch: 'riscv64'"):
        ephemeral.check_host("riscv64")


def test_inputs_digest_changes_with_content_and_mode(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    script = tmp_path / "a" / "s"
    script.write_text("x")
    first = inputs.digest(tmp_path)
    assert inputs.digest(tmp_path) == first
    os.chmod(script, 0o755)
    second = inputs.digest(tmp_path)
    script.write_text("y")
    assert len({first, second, inputs.digest(tmp_path)}) == 3


def test_target_partition_table_uses_discoverable_root_guid(tmp_path: Path) -> None:
    layout = target.Layout(esp_mib=64, root_mib=512)
    argv = target.sgdisk_argv(tmp_path / "d", "arm64", layout)
    assert "--typecode=2:b921b045-1df0-41c3-af44-4c6f280d3fae" in argv
    assert "--typecode=1:c12a7328-f81f-11d2-ba4b-00a0c93ec93b" in argv
    assert "--new=1:2048:133119" in argv
    assert "--new=2:133120:1181695" in argv
    assert layout.disk_bytes == (1 + 64 + 512 + 1) * 1024 * 1024
    assert target.stable_guid("amd64", "root-part") == target.stable_guid("amd64", "root-part")
    entry = target.loader_files("amd64", "6.1")["loader/entries/debian.conf"]
    assert f"root=PARTUUID={target.stable_guid('amd64', 'root-part')}" in entry
    assert "console=ttyS0" in entry


def test_copy_into_keeps_zero_blocks_sparse(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"A" * 10 + bytes(3 * 1024 * 1024) + b"B")
    disk = tmp_path / "disk"
    with open(disk, "wb") as handle:
        handle.truncate(8 * 1024 * 1024)
    target.copy_into(src, disk, 1024 * 1024)
    data = disk.read_bytes()
    assert data[1024 * 1024:1024 * 1024 + 10] == b"A" * 10
    assert data[4 * 1024 * 1024 + 10] == ord("B")
    assert os.stat(disk).st_blocks * 512 < 4 * 1024 * 1024


def test_prune_keeps_libraries_still_linked(tmp_path: Path) -> None:
    lib = tmp_path / "usr/lib/x86_64-linux-gnu"
    lib.mkdir(parents=True)
    (lib / "libicuuc.so.72").write_bytes(b"\x7fELF lib")
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/tool").write_bytes(b"\x7fELF needs libicuuc.so.72")
    (tmp_path / "usr/share/doc/x").mkdir(parents=True)
    removed = ephemeral.prune(tmp_path, ("usr/share/doc/*", "usr/lib/*-linux-gnu/libicu*.so*"))
    assert removed == ["usr/share/doc/x"]
    assert (lib / "libicuuc.so.72").exists()
    (tmp_path / "usr/bin/tool").unlink()
    removed = ephemeral.prune(tmp_path, ("usr/lib/*-linux-gnu/libicu*.so*",))
    assert removed == ["usr/lib/x86_64-linux-gnu/libicuuc.so.72"]


def test_images_show_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reconciler.cli import main

    (tmp_path / "amd64").mkdir()
    manifest = {
        "architecture": "amd64",
        "kernel": {"file": "vmlinuz-amd64", "package": "linux-image-6.1.0-28-amd64",
                   "version": "6.1.119-1", "size": 8 * 2**20},
        "initramfs": {"file": "initramfs-amd64.img", "compression": "zstd", "size": 95 * 2**20,
                      "uncompressedSize": 340 * 2**20,
                      "compressedSizes": {"zstd": 95 * 2**20, "gzip": 117 * 2**20}},
        "packages": [{"name": "systemd"}], "modules": {"kept": 900, "total": 4000},
        "firmwareFiles": 89, "buildSeconds": {"total": 140.0},
    }
    (tmp_path / "amd64" / "manifest.json").write_text(json.dumps(manifest))
    assert main(["images", "show", "--arch", "amd64", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "gzip 117.0 MiB, zstd 95.0 MiB" in out and "900 of 4000 modules" in out
    assert main(["images", "show", "--arch", "amd64", "--out", str(tmp_path / "no")]) == 2
    assert "manifest.json: cannot read" in capsys.readouterr().err


def test_first_boot_presets_keep_the_units_the_build_enables() -> None:
    preset = ephemeral.load_spec().rootfs / "etc/systemd/system-preset/10-ephemeral.preset"
    rules = dict(line.split()[::-1] for line in preset.read_text().splitlines()
                 if line and not line.startswith("#"))
    for unit, _ in ephemeral.ENABLE:
        if "@" not in unit and not unit.endswith(".socket"):
            assert rules.get(unit) == "enable", unit
    for unit in ephemeral.MASK:
        assert rules.get(unit, "disable") == "disable", unit
