"""Artifacts built and served by the live service boot under OVMF and carry their overlay:
the ISO fetched the way a BMC's virtual media does (curl), and the UKI downloaded by the
firmware itself over UEFI HTTP boot (OVMF's own HTTP client, which LAB.md saw send one HEAD
and one GET with a Host header lacking the port) straight from the service's artifact URL."""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.fixtures.kernel import debian_kernel
from tests.fixtures.qemu import Nic, QemuVM
from tests.fixtures.service import ServiceProcess, base_images, running_service
from tests.fixtures.tiny_initramfs import DONE, MARKER, tiny_initramfs

pytestmark = pytest.mark.integration


def _request(marker: str) -> dict[str, Any]:
    return {
        "kernel": "vmlinuz-amd64",
        "initramfs": "initramfs-amd64.img",
        "cmdline": "console=ttyS0 panic=-1",
        "architecture": "amd64",
        "files": [{"path": "/etc/overlay-test", "mode": "0600",
                   "contentBase64": base64.b64encode(marker.encode()).decode()}],
    }  # fmt: skip


def _images(tmp_path: Path) -> Path:
    base = tiny_initramfs("amd64", tmp_path / "base.img", show=["/etc/overlay-test"])
    return base_images(tmp_path / "images", "amd64", kernel=debian_kernel("amd64"),
                       initramfs=base)  # fmt: skip


def _built(svc: ServiceProcess, request: dict[str, Any]) -> dict[str, Any]:
    build_id = requests.post(f"{svc.url}/api/v1/builds", json=request).json()["id"]
    status = svc.wait_build(build_id)
    assert status["state"] == "completed", status
    return status


def _boots_with_the_overlay(vm: QemuVM, marker: str, timeout: float) -> None:
    vm.wait_for(rf"{MARKER}: /etc/overlay-test 600 0:0", timeout=timeout)
    vm.wait_for(rf"{MARKER}: content-begin\s+{marker}", timeout=30)
    vm.wait_for(DONE, timeout=60)


def test_served_iso_boots_under_ovmf(tmp_path: Path) -> None:
    marker = f"served-by-the-build-service-{time.time_ns()}"
    with running_service(tmp_path / "svc", images=_images(tmp_path)) as svc:
        status = _built(svc, _request(marker))
        iso = tmp_path / "boot.iso"
        # Fetched the way a BMC would: over HTTP from the URL the status gave.
        subprocess.run(["curl", "-sSf", "-o", str(iso), status["artifacts"]["isoUrl"]],
                       check=True, timeout=120)  # fmt: skip
    with QemuVM(tmp_path, iso=iso, memory_mib=512) as vm:
        _boots_with_the_overlay(vm, marker, timeout=240)


def test_served_uki_boots_over_uefi_http(tmp_path: Path) -> None:
    marker = f"http-booted-from-the-build-service-{time.time_ns()}"
    with running_service(tmp_path / "svc", images=_images(tmp_path)) as svc:
        status = _built(svc, _request(marker))
        path = urlsplit(status["artifacts"]["ukiUrl"]).path
        # QEMU's user network answers the firmware's DHCP with this boot URL, as a BMC's
        # HttpBootUri would hand it over; 10.0.2.2 is the host's loopback, where the service is
        # (restrict=on would cut the guest off from it; the guest talks to nothing else).
        boot_url = f"http://10.0.2.2:{svc.port}{path}"
        assert len(boot_url) < 128, boot_url  # OVMF's limit (LAB.md)
        nic = Nic("52:54:00:12:34:56", f"user,id=n0,bootfile={boot_url}")
        with QemuVM(tmp_path, nics=[nic], memory_mib=512) as vm:
            _boots_with_the_overlay(vm, marker, timeout=300)
        access = svc.log.read_text()
    # The firmware asked the service itself: a HEAD, then the GET of the whole file.
    assert f"HEAD {path} 200" in access and f"GET {path} 200" in access, access[-2000:]
