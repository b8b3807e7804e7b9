"""The fast path (reconciler/web/fast.py) answers exactly like the Flask views it bypasses.

Two identical services get the same requests in the same order: one through the fast front,
one through Flask alone (``app.extensions["reconciler.flask_wsgi"]``). Status line, every
header the app sets and the body must be equal, for good and bad input, trusted and untrusted
clients; and a counting stand-in for Flask proves which requests the fast path answered itself.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder, run_wsgi_app

from reconciler.settings import load_settings
from reconciler.web.app import create_app
from reconciler.web.fast import FastFront
from reconciler.web.http import log_access
from reconciler.web.services import Services
from tests.fixtures.service import Contract, FakeBuilder

CONTRACT = Contract()
TRUSTED, UNTRUSTED = "127.0.0.1", "192.0.2.7"
REQUEST: dict[str, Any] = {
    "kernel": "vmlinuz-amd64",
    "initramfs": "initramfs-amd64.img",
    "cmdline": "console=ttyS0",
    "architecture": "amd64",
}
LIMIT = 4096


@dataclass
class Side:
    app: Flask
    services: Services
    builder: FakeBuilder

    def wsgi(self, fast: bool) -> Any:
        return self.app.wsgi_app if fast else self.app.extensions["reconciler.flask_wsgi"]


def make_side(root: Path, *, tls: bool = True) -> Side:
    arch = root / "images" / "amd64"
    arch.mkdir(parents=True, exist_ok=True)
    (arch / "vmlinuz-amd64").write_bytes(b"kernel")
    (arch / "initramfs-amd64.img").write_bytes(b"initramfs")
    settings = load_settings(None, {}, {
        "data_dir": str(root / "data"), "images": str(root / "images"),
        "public_url": "http://files.test:8080", "trusted": ["127.0.0.0/8"],
        "max_request_bytes": str(LIMIT),
        **({"public_tls_url": "https://files.test:8443"} if tls else {}),
    })  # fmt: skip
    builder = FakeBuilder()
    services = Services.open(settings, builder=builder)
    return Side(create_app(settings, services), services, builder)


@pytest.fixture
def sides(tmp_path: Path) -> Iterator[tuple[Side, Side]]:
    fast, slow = make_side(tmp_path / "fast"), make_side(tmp_path / "flask")
    yield fast, slow
    fast.services.close(10)
    slow.services.close(10)


Answer = tuple[str, list[tuple[str, str]], bytes]


def call(wsgi: Any, method: str, path: str, body: bytes | None = None, *,
         client: str = TRUSTED, headers: dict[str, str] | None = None,
         scheme: str = "http") -> Answer:  # fmt: skip
    builder = EnvironBuilder(path=path, method=method, data=body, headers=headers,
                             base_url=f"{scheme}://files.test/",
                             environ_base={"REMOTE_ADDR": client})  # fmt: skip
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    app_iter, status, response_headers = run_wsgi_app(wsgi, environ, buffered=True)
    data = b"".join(app_iter)
    return status, list(response_headers.items()), data


def both(sides: tuple[Side, Side], method: str, path: str, body: bytes | None = None,
         contract: bool = True, **kw: Any) -> Answer:  # fmt: skip
    """The same request through the fast front of one service and Flask of the other (and,
    unless told otherwise, its answer checked against the OpenAPI document)."""
    fast, slow = sides
    ours = call(fast.wsgi(True), method, path, body, **kw)
    theirs = call(slow.wsgi(False), method, path, body, **kw)
    assert ours == theirs, (method, path, body)
    status, headers, data = ours
    if contract:
        CONTRACT.check(
            method, path, int(status.split()[0]), dict(headers).get("Content-Type"), data
        )
    return ours


def register(sides: tuple[Side, Side], checkin_id: str = "c1") -> None:
    status, _, _ = both(sides, "POST", f"/api/v1/checkins/{checkin_id}", b'{"addresses": []}')
    assert status.startswith("204")


CHECKIN_BODIES: list[bytes] = [
    b'{"addresses": ["10.0.0.1", "2001:db8::1"]}',
    b'{"addresses": [], "extra": 1}',
    b"",
    b"   ",
    b"nope",
    b"{}",
    b'{"addresses": "10.0.0.1"}',
    b'{"addresses": [1]}',
    b'{"addresses": ["10.0.0.300"]}',
    b'{"addresses": ["host.example"]}',
    b'["10.0.0.1"]',
    b'{"addresses": [NaN]}',
    b'{"addresses": ["\\ud800"]}',
    "\ufeff{}".encode(),
    b"\xff\xfe",
    json.dumps({"addresses": ["10.0.0.1"] * 1025}).encode(),  # too many and > LIMIT: 413
    json.dumps({"addresses": ["10.0.0.1"] * 300}).encode(),
]


@pytest.mark.parametrize("body", CHECKIN_BODIES)
@pytest.mark.parametrize("client", [TRUSTED, UNTRUSTED])
def test_checkin_put_answers_like_flask(sides: tuple[Side, Side], body: bytes,
                                        client: str) -> None:  # fmt: skip
    register(sides)
    both(sides, "PUT", "/api/v1/checkins/c1", body, client=client)
    # The stored state is the same too (timestamps aside).
    stored = [json.loads(call(side.wsgi(False), "GET", "/api/v1/checkins/c1")[2]) for side in sides]
    assert [s["addresses"] for s in stored] == [stored[0]["addresses"]] * 2


@pytest.mark.parametrize("checkin_id", ["unknown", "c1", "a.b-c_d~e", "caf%C3%A9", "x%2Fy",
                                        "x%00", "c1/", "'quoted'"])  # fmt: skip
def test_checkin_ids_answer_like_flask(sides: tuple[Side, Side], checkin_id: str) -> None:
    register(sides)
    body = b'{"addresses": ["10.0.0.2"]}'
    # Odd ids are Flask's to route: some answers (a 403 for an unroutable path) are outside
    # the document's operations; the two paths must still agree.
    for client in (TRUSTED, UNTRUSTED):
        both(sides, "PUT", f"/api/v1/checkins/{checkin_id}", body, client=client, contract=False)


BUILD_BODIES: list[object] = [
    REQUEST,
    {**REQUEST, "cmdline": "console=ttyS0 quiet"},
    {**REQUEST, "tlsArtifacts": True},
    {**REQUEST, "kernel": "vmlinuz-arm64"},
    {**REQUEST, "files": [{"path": "etc/x", "contentBase64": ""}]},
    {"kernel": "vmlinuz-amd64"},
    [REQUEST],
    "not json",
    {**REQUEST, "cmdline": "x" * (LIMIT + 1)},
]


@pytest.mark.parametrize("body", BUILD_BODIES)
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_build_post_answers_like_flask(sides: tuple[Side, Side], body: object,
                                       scheme: str) -> None:  # fmt: skip
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    for _ in range(2):  # new, then resubmitted (the benchmark's case)
        both(sides, "POST", "/api/v1/builds", raw, scheme=scheme)
    both(sides, "POST", "/api/v1/builds", raw, client=UNTRUSTED)  # 403


def test_tls_artifacts_without_tls_answers_like_flask(tmp_path: Path) -> None:
    fast = make_side(tmp_path / "fast", tls=False)
    slow = make_side(tmp_path / "flask", tls=False)
    try:
        body = json.dumps({**REQUEST, "tlsArtifacts": True}).encode()
        status, _, data = both((fast, slow), "POST", "/api/v1/builds", body)
        assert status.startswith("400") and b"tlsArtifacts" in data
    finally:
        fast.services.close(10)
        slow.services.close(10)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("client", [TRUSTED, UNTRUSTED])
def test_healthz_answers_like_flask(sides: tuple[Side, Side], method: str, client: str) -> None:
    # HEAD is not an operation of the document (GET is).
    status, headers, data = both(sides, method, "/healthz", client=client, contract=method == "GET")
    assert status == "200 OK" and dict(headers)["Content-Length"] == "3"
    assert data == (b"ok\n" if method == "GET" else b"")


def test_chunked_and_odd_lengths_answer_like_flask(sides: tuple[Side, Side]) -> None:
    register(sides)
    body = b'{"addresses": ["10.0.0.3"]}'
    both(sides, "PUT", "/api/v1/checkins/c1", body, headers={"Content-Length": "+27"})


class CountingFlask:
    """Stands in for Flask behind a fast front: counts what it is handed."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.paths.append(f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}")
        start_response("418 I'M A TEAPOT", [])
        return []


def test_the_fast_path_answers_the_hot_routes_itself(sides: tuple[Side, Side]) -> None:
    side = sides[0]
    register(sides)
    front = side.app.wsgi_app
    assert isinstance(front, FastFront)
    counting = CountingFlask()
    bypass = FastFront(counting, front.settings, front.services, front.verdicts, front.downloads)
    put, post = b'{"addresses": ["10.0.0.4"]}', json.dumps(REQUEST).encode()
    build_id = completed_build(side)
    for method, path, body, client in [
        ("GET", f"/artifacts/{build_id}/boot.iso", None, UNTRUSTED),
        ("HEAD", f"/artifacts/{build_id}/uki.efi", None, TRUSTED),
        ("GET", f"/artifacts/{build_id}/nope.iso", None, TRUSTED),  # 404 worded here too
        ("PUT", "/api/v1/checkins/c1", put, TRUSTED),
        ("PUT", "/api/v1/checkins/c1", put, UNTRUSTED),
        ("PUT", "/api/v1/checkins/unknown", put, UNTRUSTED),
        ("POST", "/api/v1/builds", post, TRUSTED),
        ("POST", "/api/v1/builds", b"{", TRUSTED),
        ("GET", "/healthz", None, UNTRUSTED),
    ]:
        status, _, _ = call(bypass, method, path, body, client=client)
        assert not status.startswith("418"), (method, path, client)
    for method, path, body, client in [
        ("POST", "/api/v1/builds", post, UNTRUSTED),  # refused: Flask words the 403
        ("GET", "/api/v1/builds", None, TRUSTED),
        ("POST", "/api/v1/checkins/c1", put, TRUSTED),
        ("PUT", "/api/v1/checkins/caf%C3%A9", put, TRUSTED),
        ("PUT", "/api/v1/checkins/", put, TRUSTED),
        ("POST", "/healthz", None, TRUSTED),
        ("GET", f"/artifacts/{build_id}/caf%C3%A9.iso", None, TRUSTED),
        ("GET", f"/artifacts/{build_id}/boot%2Fiso", None, TRUSTED),
        ("GET", f"/artifacts/{build_id}", None, TRUSTED),
        ("DELETE", f"/artifacts/{build_id}/boot.iso", None, TRUSTED),
    ]:
        status, _, _ = call(bypass, method, path, body, client=client)
        assert status.startswith("418"), (method, path, client)
    assert len(counting.paths) == 10


def test_both_paths_log_one_line_per_request(sides: tuple[Side, Side],
                                             caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    register(sides)
    caplog.set_level(logging.INFO, logger="reconciler.web.access")
    # Lines of earlier requests (this test's registration, earlier tests) are written by the
    # access-log thread: let them land before counting this test's own.
    assert log_access.flush()
    caplog.clear()
    both(sides, "PUT", "/api/v1/checkins/c1", b'{"addresses": ["10.0.0.5"]}', client=UNTRUSTED)
    both(sides, "GET", "/healthz")
    assert log_access.flush()
    lines = [r.getMessage() for r in caplog.records if r.name == "reconciler.web.access"]
    assert len(lines) == 4, lines
    for line in lines[:2]:
        assert line.startswith("PUT /api/v1/checkins/c1 204 ") and line.endswith(f"ms {UNTRUSTED}")
    for line in lines[2:]:
        assert line.startswith("GET /healthz 200 ") and line.endswith(f"ms {TRUSTED}")


def test_control_characters_a_client_sends_cannot_forge_log_lines(
    sides: tuple[Side, Side], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reconciler.web.access")
    assert log_access.flush()
    caplog.clear()
    forged = "x%0A2026-01-01 00:00:00,000 INFO reconciler.web.access: GET x 200 0.1ms 10.0.0.1"
    # the server percent-decodes the path: %0A, %00, %1B arrive as those characters
    for path in (f"/api/v1/checkins/{forged}", "/artifacts/a/uki.efi%00",
                 "/api/v1/builds/%1B[2J", "/healthz%E2%80%A8x"):
        method = "PUT" if "checkins" in path else "GET"
        both(sides, method, path, b"{}", contract=False, client=UNTRUSTED)
    assert log_access.flush()
    lines = [r.getMessage() for r in caplog.records if r.name == "reconciler.web.access"]
    assert len(lines) == 8, lines
    assert all(line.isprintable() for line in lines), lines
    assert any("x\\n2026-01-01" in line for line in lines)
    assert any("uki.efi\\x00 " in line for line in lines)
    assert any("\\x1b[2J" in line for line in lines)
    assert any("/healthz\\u2028x " in line for line in lines)  # a line separator


def completed_build(side: Side, request: dict[str, Any] | None = None) -> str:
    """Submit a build to ``side`` and wait (with a deadline) until the fake builder is done."""
    status, _, data = call(side.wsgi(False), "POST", "/api/v1/builds",
                           json.dumps(request or REQUEST).encode())  # fmt: skip
    assert status.startswith("202"), data
    build_id = json.loads(data)["id"]
    deadline = time.monotonic() + 30
    while (record := side.services.store.get(build_id)) is None or record.state != "completed":
        assert time.monotonic() < deadline, "the fake build never completed"
        time.sleep(0.01)  # polling a worker thread's result with a deadline
    return str(build_id)


def artifact_headers(etag: str, last_modified: str) -> list[dict[str, str]]:
    return [
        {},
        {"Range": "bytes=0-3"},
        {"Range": "bytes=2-"},
        {"Range": "bytes=-3"},
        {"Range": "bytes=-100000"},
        {"Range": "bytes=100000-"},  # 416
        {"Range": "bytes=0-1,3-4"},  # ignored: whole file
        {"Range": "lines=0-1"},
        {"Range": "bytes=0-3", "If-Range": etag},
        {"Range": "bytes=0-3", "If-Range": '"other"'},
        {"Range": "bytes=0-3", "If-Range": last_modified},
        {"If-None-Match": etag},  # 304
        {"If-None-Match": f'W/{etag}, "x"'},
        {"If-None-Match": '"x"'},
        {"If-Modified-Since": last_modified},  # 304
        {"If-Modified-Since": "not a date"},
    ]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("client", [TRUSTED, UNTRUSTED])
def test_artifact_requests_answer_like_flask(sides: tuple[Side, Side], method: str,
                                             client: str) -> None:  # fmt: skip
    # One service, both paths: ETag and Last-Modified name this service's own files.
    side = sides[0]
    build_id = completed_build(side)
    slots_before = free_slots(side)
    _, first, _ = call(side.wsgi(False), "GET", f"/artifacts/{build_id}/boot.iso")
    etag, last_modified = dict(first)["ETag"], dict(first)["Last-Modified"]
    paths = [f"/artifacts/{build_id}/{name}" for name in ("boot.iso", "uki.efi", "x.iso", "..")]
    paths += [f"/artifacts/{'0' * 64}/boot.iso", f"/artifacts/{build_id}/boot.iso/"]
    seen = set()
    for path in paths:
        for headers in artifact_headers(etag, last_modified):
            ours = call(side.wsgi(True), method, path, headers=headers, client=client)
            theirs = call(side.wsgi(False), method, path, headers=headers, client=client)
            assert ours == theirs, (method, path, headers)
            seen.add(ours[0].split()[0])
    assert {"200", "304", "404"} <= seen
    if method == "GET":  # Range applies to GET only
        assert {"206", "416"} <= seen
    assert free_slots(side) == slots_before  # every body closed gave its download slot back


def free_slots(side: Side) -> int:
    slots = side.app.extensions["reconciler.downloads"]
    taken = 0
    while slots.acquire(blocking=False):
        taken += 1
    for _ in range(taken):
        slots.release()
    return taken


def test_a_pending_build_and_a_busy_server_answer_like_flask(sides: tuple[Side, Side]) -> None:
    side = sides[0]
    builder = side.builder
    build_id = completed_build(side)
    builder.gate = threading.Event()  # the next build waits: it stays running
    status, _, data = call(side.wsgi(False), "POST", "/api/v1/builds",
                           json.dumps({**REQUEST, "cmdline": "other"}).encode())  # fmt: skip
    pending = json.loads(data)["id"]
    try:
        path = f"/artifacts/{pending}/boot.iso"
        assert call(side.wsgi(True), "GET", path) == call(side.wsgi(False), "GET", path)
        # Every download slot taken: 503 with Retry-After, on both paths.
        slots = side.app.extensions["reconciler.downloads"]
        taken = 0
        while slots.acquire(blocking=False):
            taken += 1
        try:
            path = f"/artifacts/{build_id}/boot.iso"
            ours = call(side.wsgi(True), "GET", path)
            assert ours == call(side.wsgi(False), "GET", path)
            assert ours[0].startswith("503") and ("Retry-After", "5") in ours[1]
        finally:
            for _ in range(taken):
                slots.release()
    finally:
        builder.gate.set()
