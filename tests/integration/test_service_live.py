"""The real ``reconciler serve`` over real sockets, with the real artifacts pipeline.

One service (HTTP + TLS, trusting only 127.0.0.1/32) serves the module's tests; a "booted
server" or BMC is a curl bound to 127.0.0.2, so the ACL sees a second source address. Every
JSON answer is checked against schemas/openapi.yaml.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.kernel import debian_kernel
from tests.fixtures.service import (
    Contract,
    ServiceProcess,
    TlsFiles,
    base_images,
    make_tls,
    running_service,
)
from tests.fixtures.tiny_initramfs import tiny_initramfs

pytestmark = pytest.mark.integration

CONTRACT = Contract()
OUTSIDE = "127.0.0.2"  # not in the trusted 127.0.0.1/32


@dataclass
class Live:
    svc: ServiceProcess
    tls: TlsFiles
    tmp: Path

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        response = requests.request(method, f"{self.svc.url}{path}", timeout=30, **kw)
        return CONTRACT.check_requests(response)

    def curl(self, *args: str, source: str | None = None) -> subprocess.CompletedProcess[bytes]:
        argv = ["curl", "-sS", "--max-time", "60", "--cacert", str(self.tls.ca)]
        if source is not None:
            argv += ["--interface", source]
        return subprocess.run([*argv, *args], capture_output=True, timeout=90, check=False)

    def status_of(self, url: str, *args: str, source: str | None = None) -> int:
        out = self.curl("-o", "/dev/null", "-w", "%{http_code}", *args, url, source=source)
        assert out.returncode == 0, out.stderr
        return int(out.stdout)

    def wait_build(self, build_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status: dict[str, Any] = self.api("GET", f"/api/v1/builds/{build_id}").json()
            if status["state"] in ("completed", "failed"):
                return status
            assert time.monotonic() < deadline, status
            time.sleep(0.1)


REQUEST: dict[str, Any] = {
    "kernel": "vmlinuz-amd64",
    "initramfs": "initramfs-amd64.img",
    "cmdline": "console=ttyS0 panic=-1",
    "architecture": "amd64",
}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("service-live")
    base = tiny_initramfs("amd64", tmp / "base.img", show=["/etc/overlay-test"])
    images = base_images(tmp / "images", "amd64", kernel=debian_kernel("amd64"), initramfs=base)
    tls = make_tls(tmp)
    with running_service(tmp / "svc", images=images, tls=tls) as svc:
        yield Live(svc, tls, tmp)


def test_inspection_flow(live: Live) -> None:
    """The seed's inspection client: submit, register, poll, PUT from the server, poll."""
    inspect_id = str(uuid.uuid4())
    checkin_url = f"{live.svc.url}/api/v1/checkins/{inspect_id}"
    body = dict(REQUEST, tlsArtifacts=False, files=[
        {"path": "/var/lib/cloud/seed/nocloud/meta-data",
         "contentBase64": b64(f"instance-id: {inspect_id}\n"), "mode": "0644"},
        {"path": "/var/lib/cloud/seed/nocloud/checkin-url",
         "contentBase64": b64(checkin_url), "mode": "0644"},
        {"path": "/usr/local/bin/python", "linkTarget": "/usr/bin/python3"},
        {"path": "/root/.ssh/authorized_keys", "contentBase64": b64("ssh-ed25519 AAAA test\n"),
         "mode": "0600"},
    ], dirOverrides=[{"path": "/root", "mode": "0700"},
                     {"path": "/root/.ssh", "mode": "0700"}])  # fmt: skip
    submitted = live.api("POST", "/api/v1/builds", json=body)
    assert submitted.status_code == 202
    build_id = submitted.json()["id"]
    assert submitted.json()["statusUrl"] == f"{live.svc.url}/api/v1/builds/{build_id}"
    registered = live.api("POST", f"/api/v1/checkins/{inspect_id}", json={"addresses": []})
    assert registered.status_code == 204

    status = live.wait_build(build_id)
    assert status["state"] == "completed", status
    assert set(status) >= {"id", "state", "createdAt", "completedAt", "artifacts"}
    iso_url = status["artifacts"]["isoUrl"]
    assert iso_url == f"{live.svc.url}/artifacts/{build_id}/boot.iso" and "?" not in iso_url

    # Not reported yet: the record exists with no addresses.
    assert live.api("GET", f"/api/v1/checkins/{inspect_id}").json()["addresses"] == []
    # The booted server: curl -X PUT in a loop until 204, from an untrusted address.
    put = live.curl("-X", "PUT", "-d", '{"addresses": ["198.18.0.150"]}', "-o", "/dev/null",
                    "-w", "%{http_code}", checkin_url, source=OUTSIDE)  # fmt: skip
    assert put.stdout == b"204", put
    record = live.api("GET", f"/api/v1/checkins/{inspect_id}").json()
    assert record["id"] == inspect_id and record["addresses"] == ["198.18.0.150"]

    # Identical request: the same build, not built again.
    again = live.api("POST", "/api/v1/builds", json=body)
    assert again.json()["id"] == build_id
    unchanged = live.api("GET", f"/api/v1/builds/{build_id}").json()
    assert unchanged["completedAt"] == status["completedAt"]
    assert live.api("DELETE", f"/api/v1/checkins/{inspect_id}").status_code == 204


def completed_build(live: Live, **extra: Any) -> tuple[str, dict[str, Any]]:
    response = live.api("POST", "/api/v1/builds", json=dict(REQUEST, **extra))
    assert response.status_code == 202
    status = live.wait_build(response.json()["id"])
    assert status["state"] == "completed", status
    return status["id"], status


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_range_and_head_with_curl(live: Live, scheme: str) -> None:
    build_id, _ = completed_build(live)
    base = live.svc.url if scheme == "http" else live.svc.tls_url
    url = f"{base}/artifacts/{build_id}/boot.iso"
    data = (live.svc.data_dir / "builds" / build_id / "boot.iso").read_bytes()
    size = len(data)

    head = live.curl("-I", url, source=OUTSIDE)
    headers = head.stdout.decode().lower()
    assert head.stdout.startswith(b"HTTP/1.1 200"), head
    assert f"content-length: {size}\r\n" in headers and "accept-ranges: bytes" in headers
    etag = next(line.split(": ", 1)[1] for line in head.stdout.decode().split("\r\n")
                if line.lower().startswith("etag:"))  # fmt: skip
    last_modified = next(line.split(": ", 1)[1] for line in head.stdout.decode().split("\r\n")
                         if line.lower().startswith("last-modified:"))  # fmt: skip

    whole = live.curl(url, source=OUTSIDE)
    assert sha256_of(whole.stdout) == sha256_of(data)

    cases: Sequence[tuple[str, int, int, bytes]] = [
        ("0-4194303", 206, 0, data[:4194304]),
        (f"{size - 1000}-", 206, size - 1000, data[-1000:]),  # open-ended
        (f"{size - 10}-{size + 5000}", 206, size - 10, data[-10:]),  # clipped
        ("-512", 206, size - 512, data[-512:]),  # suffix
        (f"{size}-", 416, 0, b""),
    ]
    for spec, code, first, expected in cases:
        out = live.curl("-r", spec, "-D", "-", url, source=OUTSIDE)
        head_text, _, body = out.stdout.partition(b"\r\n\r\n")
        head_lower = head_text.decode().lower()
        assert head_text.startswith(f"HTTP/1.1 {code}".encode()), (spec, head_text)
        if code == 206:
            assert sha256_of(body) == sha256_of(expected), spec
            last = first + len(expected) - 1
            assert f"content-range: bytes {first}-{last}/{size}" in head_lower, spec
        else:
            assert f"content-range: bytes */{size}" in head_lower

    # Conditional requests.
    assert live.status_of(url, "-H", f"If-None-Match: {etag}") == 304
    assert live.status_of(url, "-H", f"If-Modified-Since: {last_modified}") == 304
    assert live.status_of(url, "-r", "0-9", "-H", f"If-Range: {etag}") == 206
    assert live.status_of(url, "-r", "0-9", "-H", f"If-Range: {last_modified}") == 206
    assert live.status_of(url, "-r", "0-9", "-H", 'If-Range: "stale"') == 200
    # Keep-alive survives a ranged body: two ranges on one connection.
    two = live.curl("-r", "0-9", url, "-r", "10-19", url, source=OUTSIDE)
    assert two.stdout == data[:20]


def test_acl_from_a_second_loopback_address(live: Live) -> None:
    build_id, _ = completed_build(live)
    url = live.svc.url
    live.api("POST", "/api/v1/checkins/acl-test", json={"addresses": []})
    allowed = [
        ("GET", "/healthz", 200),
        ("GET", f"/artifacts/{build_id}/uki.efi", 200),
        ("HEAD", f"/artifacts/{build_id}/boot.iso", 200),
        ("PUT", "/api/v1/checkins/acl-test", 204),
    ]
    refused = [
        ("POST", "/api/v1/builds"), ("GET", "/api/v1/builds"), ("DELETE", "/api/v1/builds"),
        ("GET", f"/api/v1/builds/{build_id}"), ("DELETE", f"/api/v1/builds/{build_id}"),
        ("POST", "/api/v1/checkins/acl-test"), ("GET", "/api/v1/checkins/acl-test"),
        ("DELETE", "/api/v1/checkins/acl-test"), ("DELETE", "/api/v1/checkins"),
        ("GET", "/api/v1/openapi.yaml"), ("GET", "/nothing/here"),
    ]  # fmt: skip
    body = ["-H", "Content-Type: application/json", "-d", json.dumps({"addresses": ["10.1.2.3"]})]
    for method, path, code in allowed:
        verb = ["-I"] if method == "HEAD" else ["-X", method]
        extra = body if method == "PUT" else []
        got = live.status_of(f"{url}{path}", *verb, *extra, source=OUTSIDE)
        assert got == code, (method, path, got)
    for method, path in refused:
        out = live.curl("-X", method, *(body if method in ("POST", "PUT") else []),
                        "-w", "\n%{http_code}", f"{url}{path}", source=OUTSIDE)  # fmt: skip
        text, _, code = out.stdout.decode().rpartition("\n")
        assert code == "403", (method, path, code)
        assert json.loads(text)["message"].startswith(f"client: {OUTSIDE} may not {method}")
    # Nothing was changed from outside; the trusted client still sees everything.
    assert live.api("GET", f"/api/v1/builds/{build_id}").status_code == 200
    assert live.api("GET", "/api/v1/checkins/acl-test").json()["addresses"] == ["10.1.2.3"]


def test_tls_verified_with_the_test_ca(live: Live) -> None:
    # A client that connects and says nothing must not hold up everyone else's handshake.
    with socket.create_connection(("127.0.0.1", live.svc.tls_port or 0)):
        started = time.monotonic()
        health = live.curl(f"{live.svc.tls_url}/healthz")
        assert time.monotonic() - started < 5
    assert health.returncode == 0 and health.stdout == b"ok\n", health
    # Without the CA the certificate is not trusted: the listener really is TLS.
    plain = subprocess.run(["curl", "-sS", f"{live.svc.tls_url}/healthz"], capture_output=True,
                           timeout=30, check=False)  # fmt: skip
    assert plain.returncode == 60, plain  # peer certificate cannot be authenticated
    build_id, status = completed_build(live, tlsArtifacts=True)
    assert status["artifacts"]["ukiUrl"] == f"{live.svc.tls_url}/artifacts/{build_id}/uki.efi"
    assert live.status_of(status["artifacts"]["ukiUrl"], source=OUTSIDE) == 200
    # The checkin callback over HTTPS, as the seed's TLS section describes.
    live.api("POST", "/api/v1/checkins/tls-test", json={"addresses": []})
    url = f"{live.svc.tls_url}/api/v1/checkins/tls-test"
    put = ["-X", "PUT", "-d", '{"addresses": ["192.0.2.10"]}']
    assert live.status_of(url, *put, source=OUTSIDE) == 204


def test_bad_input_over_the_wire(live: Live) -> None:
    url = f"{live.svc.url}/api/v1/builds"
    cases = [
        (["-d", "{oops"], 400, "request body: not valid JSON"),
        (["-d", json.dumps(dict(REQUEST, architecture="sparc"))], 400, "architecture:"),
        (["-d", json.dumps(dict(REQUEST, kernel="vmlinuz-9"))], 400, "kernel: 'vmlinuz-9'"),
        (["--data-binary", "@-"], 413, "request body: larger than the limit"),
    ]
    for args, code, message in cases:
        proc = subprocess.run(
            ["curl", "-sS", "-H", "Content-Type: application/json", *args,
             "-w", "\n%{http_code}", url],
            input=b"x" * (17 * 1024 * 1024) if "@-" in args else None,
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        text, _, got = proc.stdout.decode().rpartition("\n")
        assert int(got) == code, (args[:2], got, text)
        assert json.loads(text)["message"].startswith(message)
    # Odd artifact names, encoded or not, resolve nothing.
    build_id, _ = completed_build(live)
    for name in ("..", "%2e%2e%2fbuild.json", "..%2Fbuild.json", "uki.efi%00", "build.json"):
        code = live.status_of(f"{live.svc.url}/artifacts/{build_id}/{name}", "--path-as-is")
        assert code in (400, 404), (name, code)
    assert live.status_of(f"{live.svc.url}/artifacts/{build_id}/../../../etc/passwd",
                          "--path-as-is") in (400, 404)  # fmt: skip
    assert "Traceback" not in live.svc.log.read_text()
