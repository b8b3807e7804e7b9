"""Boot what ``build_artifacts`` makes under QEMU + OVMF/AAVMF (TCG) and read the console.

Per architecture, one build: a tiny busybox base initramfs (made with the real cpio tool) plus
an overlay with a regular file, a symlink and a directory override. Booted (a) as a UKI
handed to the firmware, (b) as the ISO on a CD-ROM (GRUB chainloads the UKI). The tiny /init
prints what the overlay put there, then powers off; QEMU is always killed on the way out.

Budget: four boots, about 10-25 s each under TCG on a loaded 2-core machine.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from reconciler.artifacts.pipeline import BuiltArtifacts, build_artifacts
from reconciler.artifacts.request import parse_build_request
from reconciler.artifacts.toolchain import ARCHES, find_grub_modules, find_stub
from reconciler.errors import ToolMissing
from tests.conftest import skip_or_fail
from tests.fixtures.kernel import debian_kernel
from tests.fixtures.qemu import QemuVM, require_firmware
from tests.fixtures.tiny_initramfs import DONE, MARKER, tiny_initramfs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CONTENT = "overlay says hello 7c1f"
SHOW = ["/etc/overlay-test", "/usr/local/bin/python", "/root", "/srv/data"]
BOOT_TIMEOUT = 240.0


def _build(arch: str, workdir: Path) -> BuiltArtifacts:
    require_firmware(arch)
    try:
        find_stub(arch)
        find_grub_modules(arch)
    except ToolMissing as exc:
        skip_or_fail(str(exc))
    base = tiny_initramfs(arch, workdir / "base.img", show=SHOW)
    req = parse_build_request(
        {
            "kernel": "vmlinuz",
            "initramfs": "base.img",
            "cmdline": f"console={ARCHES[arch].console} panic=-1 reconciler.test=1",
            "architecture": arch,
            "files": [
                {
                    "path": "/etc/overlay-test",
                    "contentBase64": base64.b64encode(CONTENT.encode()).decode(),
                    "mode": "0640",
                    "gid": 42,
                },
                {"path": "/usr/local/bin/python", "linkTarget": "/usr/bin/python3"},
            ],
            "dirOverrides": [{"path": "/root", "mode": "0700"}, {"path": "/srv/data", "uid": 7}],
        }
    )
    return build_artifacts(
        req, kernel=debian_kernel(arch), initramfs=base, out_dir=workdir / "out",
        cache=workdir / "cache",
    )  # fmt: skip


@pytest.fixture(scope="module", params=sorted(ARCHES))
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, BuiltArtifacts]:
    """One build per architecture, shared by its UKI and ISO boots."""
    arch: str = request.param
    return arch, _build(arch, tmp_path_factory.mktemp(f"artifacts-{arch}"))


def _check_console(vm: QemuVM, arch: str) -> None:
    vm.wait_for(re.escape(DONE), timeout=BOOT_TIMEOUT)
    text = vm.console().replace("\r", "")
    # .cmdline reached the kernel untouched: GRUB and QEMU passed no arguments over it.
    assert f"{MARKER}: cmdline console={ARCHES[arch].console} panic=-1 reconciler.test=1\n" in text
    assert f"{MARKER}: /etc/overlay-test 640 0:42\n{MARKER}: content-begin\n{CONTENT}\n" in text
    assert f"{MARKER}: /usr/local/bin/python 777 0:0 -> /usr/bin/python3\n" in text
    assert f"{MARKER}: /root 700 0:0\n" in text
    assert f"{MARKER}: /srv/data 755 7:0\n" in text


def test_uki_boots(built: tuple[str, BuiltArtifacts], tmp_path: Path) -> None:
    arch, artifacts = built
    with QemuVM(tmp_path, arch=arch, uki=artifacts.uki, name=f"uki-{arch}") as vm:
        _check_console(vm, arch)
        assert vm.wait_exit(timeout=60) == 0  # /init powered off


def test_iso_boots_from_cdrom(built: tuple[str, BuiltArtifacts], tmp_path: Path) -> None:
    arch, artifacts = built
    with QemuVM(tmp_path, arch=arch, iso=artifacts.iso, name=f"iso-{arch}") as vm:
        _check_console(vm, arch)
        assert vm.wait_exit(timeout=60) == 0


@pytest.mark.parametrize("built", ["amd64"], indirect=True)
def test_iso_boots_from_usb_cdrom(built: tuple[str, BuiltArtifacts], tmp_path: Path) -> None:
    """BMC virtual media shows up as a USB CD-ROM; amd64 only, to keep the budget."""
    arch, artifacts = built
    usb_cd = [
        "-device", "qemu-xhci,id=xhci",
        "-drive", f"if=none,id=usbcd,media=cdrom,readonly=on,file={artifacts.iso}",
        "-device", "usb-bot,id=bot0,bus=xhci.0",
        "-device", "scsi-cd,bus=bot0.0,drive=usbcd,bootindex=1",
    ]  # fmt: skip
    with QemuVM(tmp_path, arch=arch, extra=usb_cd, name=f"usbcd-{arch}") as vm:
        _check_console(vm, arch)
        assert vm.wait_exit(timeout=60) == 0
