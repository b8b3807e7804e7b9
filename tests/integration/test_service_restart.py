"""Crash in the middle of a build, restart, SIGTERM during a download: the real service.

The base initramfs is 200 MB so a build runs long enough to be caught running.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.fixtures.kernel import debian_kernel
from tests.fixtures.service import base_images, running_service

pytestmark = pytest.mark.integration

REQUEST = {
    "kernel": "vmlinuz-amd64",
    "initramfs": "initramfs-amd64.img",
    "cmdline": "console=ttyS0",
    "architecture": "amd64",
}
BIG = 200 * 1024 * 1024


def test_crash_mid_build_restart_and_sigterm(tmp_path: Path) -> None:
    initramfs = tmp_path / "big.img"
    with open(initramfs, "wb") as f:
        f.truncate(BIG)  # sparse: costs no disk until the pipeline copies it
    images = base_images(tmp_path / "images", "amd64", kernel=debian_kernel("amd64"),
                         initramfs=initramfs)  # fmt: skip
    env = {"RECONCILER_SHUTDOWN_TIMEOUT": "2"}
    with running_service(tmp_path / "svc", images=images, env=env) as svc:
        api = svc.url + "/api/v1"
        assert requests.post(f"{api}/checkins/node-1", json={"addresses": []}).status_code == 204
        build_id = requests.post(f"{api}/builds", json=REQUEST).json()["id"]
        build_dir = svc.data_dir / "builds" / build_id
        deadline = time.monotonic() + 60
        while requests.get(f"{api}/builds/{build_id}").json()["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        svc.kill()  # SIGKILL: nothing gets to clean up
        record = json.loads((build_dir / "build.json").read_text())
        assert record["state"] == "running"
        assert sorted(p.name for p in build_dir.iterdir()) == ["build.json"]  # nothing half-made

        svc.start()
        status = requests.get(f"{api}/builds/{build_id}").json()
        assert status["state"] in ("pending", "running")  # re-run, never served half-made
        assert requests.head(f"{svc.url}/artifacts/{build_id}/uki.efi").status_code == 404
        status = svc.wait_build(build_id)
        assert status["state"] == "completed", status
        uki_url = status["artifacts"]["ukiUrl"]
        size = int(requests.head(uki_url).headers["Content-Length"])
        assert size > BIG and size == (build_dir / "uki.efi").stat().st_size
        assert list((svc.data_dir / "work").iterdir()) == []
        # The checkin registered before the crash still accepts the server's PUT.
        put = requests.put(f"{api}/checkins/node-1", json={"addresses": ["198.18.0.101"]})
        assert put.status_code == 204

        # SIGTERM while a slow client downloads: the process still ends by the deadline.
        out = tmp_path / "partial.efi"
        curl = subprocess.Popen(["curl", "-sS", "--limit-rate", "2M", "-o", str(out), uki_url],
                                stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not out.exists() or out.stat().st_size == 0:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            started = time.monotonic()
            assert svc.stop(timeout=20) == 0
            assert time.monotonic() - started < 10
            assert curl.wait(30) != 0 and out.stat().st_size < size  # cut off, not "complete"
        finally:
            curl.kill()
            curl.wait()
        log = svc.log.read_text()
        assert "SIGTERM: stopping" in log and "stopped" in log

        # After a clean stop, everything is still there.
        svc.start()
        assert requests.get(f"{api}/builds/{build_id}").json()["state"] == "completed"
        record = requests.get(f"{api}/checkins/node-1").json()
        assert record["addresses"] == ["198.18.0.101"]
        assert requests.head(uki_url).headers["Content-Length"] == str(size)
