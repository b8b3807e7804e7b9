"""An ISO built and served by the live service boots under OVMF and carries its overlay."""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.fixtures.kernel import debian_kernel
from tests.fixtures.qemu import QemuVM
from tests.fixtures.service import base_images, running_service
from tests.fixtures.tiny_initramfs import DONE, MARKER, tiny_initramfs

pytestmark = pytest.mark.integration


def test_served_iso_boots_under_ovmf(tmp_path: Path) -> None:
    base = tiny_initramfs("amd64", tmp_path / "base.img", show=["/etc/overlay-test"])
    images = base_images(tmp_path / "images", "amd64", kernel=debian_kernel("amd64"),
                         initramfs=base)  # fmt: skip
    marker = f"served-by-the-build-service-{time.time_ns()}"
    request = {
        "kernel": "vmlinuz-amd64",
        "initramfs": "initramfs-amd64.img",
        "cmdline": "console=ttyS0 panic=-1",
        "architecture": "amd64",
        "files": [{"path": "/etc/overlay-test", "mode": "0600",
                   "contentBase64": base64.b64encode(marker.encode()).decode()}],
    }  # fmt: skip
    with running_service(tmp_path / "svc", images=images) as svc:
        build_id = requests.post(f"{svc.url}/api/v1/builds", json=request).json()["id"]
        deadline = time.monotonic() + 120
        while (status := requests.get(f"{svc.url}/api/v1/builds/{build_id}").json())["state"] \
                not in ("completed", "failed"):  # fmt: skip
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        assert status["state"] == "completed", status
        iso = tmp_path / "boot.iso"
        # Fetched the way a BMC would: over HTTP from the URL the status gave.
        subprocess.run(["curl", "-sSf", "-o", str(iso), status["artifacts"]["isoUrl"]],
                       check=True, timeout=120)  # fmt: skip
    with QemuVM(tmp_path, iso=iso, memory_mib=512) as vm:
        vm.wait_for(rf"{MARKER}: /etc/overlay-test 600 0:0", timeout=240)
        vm.wait_for(rf"{MARKER}: content-begin\s+{marker}", timeout=30)
        vm.wait_for(DONE, timeout=60)
