"""The Flask app through its test client, with a fake builder; every response is checked
against schemas/openapi.yaml. The live-server tests (tests/integration) use the real pipeline.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from reconciler.settings import load_settings
from reconciler.web.app import create_app
from reconciler.web.services import Services
from tests.fixtures.service import Contract, FakeBuilder

CONTRACT = Contract()
TRUSTED = "127.0.0.1"
UNTRUSTED = "192.0.2.7"
REQUEST: dict[str, Any] = {
    "kernel": "vmlinuz-amd64",
    "initramfs": "initramfs-amd64.img",
    "cmdline": "console=ttyS0",
    "architecture": "amd64",
}


@dataclass
class Api:
    app: Flask
    client: FlaskClient
    services: Services
    builder: FakeBuilder

    def call(self, method: str, path: str, *, client: str = TRUSTED, **kw: Any) -> TestResponse:
        response = self.client.open(path, method=method, environ_base={"REMOTE_ADDR": client},
                                    buffered=True,
                                    **kw)  # fmt: skip
        CONTRACT.check(method, path.split("?")[0], response.status_code,
                       response.headers.get("Content-Type"), response.get_data())  # fmt: skip
        return response

    def built(self, body: dict[str, Any] = REQUEST) -> dict[str, Any]:
        accepted = self.call("POST", "/api/v1/builds", json=body)
        assert accepted.status_code == 202, accepted.json
        deadline = time.monotonic() + 10
        while True:
            status: dict[str, Any] = self.call("GET", f"/api/v1/builds/{accepted.json['id']}").json  # type: ignore[index,assignment]
            if status["state"] in ("completed", "failed"):
                return status
            assert time.monotonic() < deadline, status
            time.sleep(0.01)


def make_api(tmp_path: Path, **flags: object) -> Api:
    arch = tmp_path / "images" / "amd64"
    arch.mkdir(parents=True, exist_ok=True)
    (arch / "vmlinuz-amd64").write_bytes(b"kernel")
    (arch / "initramfs-amd64.img").write_bytes(b"initramfs")
    settings = load_settings(None, {}, {
        "data_dir": str(tmp_path / "data"), "images": str(tmp_path / "images"),
        "public_url": "http://files.test:8080", "public_tls_url": "https://files.test:8443",
        "trusted": ["127.0.0.0/8"], "max_request_bytes": "65536", **flags,
    })  # fmt: skip
    builder = FakeBuilder()
    services = Services.open(settings, builder=builder)
    app = create_app(settings, services)
    return Api(app, app.test_client(), services, builder)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    made = make_api(tmp_path)
    yield made
    made.services.close(10)


def test_build_lifecycle(api: Api) -> None:
    status = api.built()
    assert status["state"] == "completed" and "error" not in status
    build_id = status["id"]
    assert status["artifacts"] == {
        "ukiUrl": f"http://files.test:8080/artifacts/{build_id}/uki.efi",
        "isoUrl": f"http://files.test:8080/artifacts/{build_id}/boot.iso",
    }
    accepted = api.call("POST", "/api/v1/builds", json=REQUEST)
    assert accepted.status_code == 202
    assert accepted.json == {"id": build_id,
                             "statusUrl": f"http://files.test:8080/api/v1/builds/{build_id}"}
    assert api.builder.calls == [build_id]  # not built again
    listed = api.call("GET", "/api/v1/builds").json
    assert [b["id"] for b in listed] == [build_id]  # type: ignore[union-attr]
    assert api.call("GET", f"/artifacts/{build_id}/boot.iso").data.startswith(b"ISO:")
    assert api.call("DELETE", f"/api/v1/builds/{build_id}").status_code == 204
    assert api.call("DELETE", f"/api/v1/builds/{build_id}").status_code == 404
    assert api.call("GET", f"/api/v1/builds/{build_id}").status_code == 404
    assert api.call("GET", f"/artifacts/{build_id}/boot.iso").status_code == 404


def test_tls_artifacts_use_the_https_base(api: Api) -> None:
    status = api.built(dict(REQUEST, tlsArtifacts=True))
    assert status["artifacts"]["isoUrl"].startswith("https://files.test:8443/artifacts/")
    assert status["artifacts"]["isoUrl"].endswith("/boot.iso")


def test_tls_artifacts_without_tls_is_refused(tmp_path: Path) -> None:
    api = make_api(tmp_path, public_tls_url=None)  # no certificate, no HTTPS base URL
    try:
        response = api.call("POST", "/api/v1/builds", json=dict(REQUEST, tlsArtifacts=True))
        assert response.status_code == 400
        assert response.json is not None
        assert response.json["message"].startswith("tlsArtifacts: this service has no HTTPS")
    finally:
        api.services.close(10)


def test_failed_build_reports_and_rebuilds(api: Api) -> None:
    api.builder.fail = "xorriso failed with exit status 5: no space"
    status = api.built()
    assert status["state"] == "failed" and "completedAt" in status and "artifacts" not in status
    assert status["error"] == "xorriso failed with exit status 5: no space"
    api.builder.fail = None
    assert api.built()["state"] == "completed"


def test_purge_builds(api: Api) -> None:
    api.built()
    api.built(dict(REQUEST, cmdline="other"))
    assert api.call("DELETE", "/api/v1/builds").status_code == 204
    assert api.call("GET", "/api/v1/builds").json == []


def test_checkin_flow(api: Api) -> None:
    cid = "6f1c3c0e-1b9a-4a8e-9a57-3d1c1c1c1c1c"
    assert api.call("PUT", f"/api/v1/checkins/{cid}", json={"addresses": []},
                    client=UNTRUSTED).status_code == 404  # fmt: skip
    assert api.call("POST", f"/api/v1/checkins/{cid}", json={"addresses": []}).status_code == 204
    record = api.call("GET", f"/api/v1/checkins/{cid}").json
    assert record is not None and record["id"] == cid and record["addresses"] == []
    put = api.call("PUT", f"/api/v1/checkins/{cid}", client=UNTRUSTED,
                   data='{"addresses": ["198.18.0.150", "2001:db8::1"]}',
                   content_type="application/x-www-form-urlencoded")  # curl -d's default
    assert put.status_code == 204
    record = api.call("GET", f"/api/v1/checkins/{cid}").json
    assert record is not None and record["addresses"] == ["198.18.0.150", "2001:db8::1"]
    assert api.call("DELETE", f"/api/v1/checkins/{cid}").status_code == 204
    assert api.call("DELETE", f"/api/v1/checkins/{cid}").status_code == 404
    assert api.call("GET", f"/api/v1/checkins/{cid}").status_code == 404
    api.call("POST", "/api/v1/checkins/a", json={"addresses": []})
    assert api.call("DELETE", "/api/v1/checkins").status_code == 204
    assert api.call("GET", "/api/v1/checkins/a").status_code == 404


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def file_entry(**kw: Any) -> dict[str, Any]:
    return {"path": "/etc/x", "contentBase64": b64(b"x"), **kw}


BAD_BUILDS: list[tuple[object, str]] = [
    ("{not json", "request body: not valid JSON"),
    ("", "request body: empty"),
    ("[1, 2]", "request: expected an object, got an array"),
    ('{"kernel": NaN}', "request body: not valid JSON: NaN is not JSON"),
    ('{"cmdline": "\\ud800"}', "request body: not valid JSON"),
    (b"\xff\xfe", "request body: not valid UTF-8"),
    ({**REQUEST, "kernel": 5}, "kernel: expected a string, got a number"),
    ({k: v for k, v in REQUEST.items() if k != "cmdline"}, "cmdline: required"),
    ({**REQUEST, "architecture": "riscv64"}, "architecture: 'riscv64' is not one of"),
    ({**REQUEST, "kernel": "../amd64/vmlinuz-amd64"}, "kernel: '../amd64/vmlinuz-amd64' is not"),
    ({**REQUEST, "kernel": "vmlinuz-arm64"}, "kernel: 'vmlinuz-arm64' is not a base artifact"),
    ({**REQUEST, "initramfs": "nope.img"}, "initramfs: 'nope.img' is not a base artifact"),
    ({**REQUEST, "tlsArtifacts": "yes"}, "tlsArtifacts: expected a boolean"),
    ({**REQUEST, "files": {}}, "files: expected an array"),
    ({**REQUEST, "files": [file_entry(path="etc/x")]}, "files[0].path: 'etc/x' is not absolute"),
    ({**REQUEST, "files": [file_entry(path="/a/../b")]}, "files[0].path: '/a/../b' is not"),
    ({**REQUEST, "files": [file_entry(mode="0abc")]}, "files[0].mode: '0abc' is not an octal mode"),
    ({**REQUEST, "files": [file_entry(contentBase64="@@@")]}, "files[0].contentBase64: invalid"),
    ({**REQUEST, "files": [file_entry(uid=-1)]}, "files[0].uid: -1 is out of range"),
    ({**REQUEST, "files": [{"path": "/x"}]}, "files[0]: regular file '/x' has no contentBase64"),
    ({**REQUEST, "files": [file_entry(), file_entry()]}, "files[1].path: '/etc/x' is given twice"),
    ({**REQUEST, "files": [file_entry(path="/l", linkTarget="/x"), file_entry(path="/l/y")]},
     "files[1].path: '/l/y' is below the symlink '/l'"),
    ({**REQUEST, "dirOverrides": [{"path": "/root/.ssh", "mode": "9"}]},
     "dirOverrides[0].mode: '9' is not an octal mode"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BUILDS)
def test_bad_build_requests_name_the_field(api: Api, body: object, message: str) -> None:
    kw: dict[str, Any] = {"json": body} if isinstance(body, dict) else {"data": body}
    response = api.call("POST", "/api/v1/builds", **kw)
    assert response.status_code == 400, response.json
    assert response.json is not None and response.json["message"].startswith(message)
    assert api.call("GET", "/api/v1/builds").json == []
    assert api.builder.calls == []


BAD_CHECKINS: list[tuple[object, str]] = [
    ("nope", "request body: not valid JSON"),
    ({}, "addresses: required"),
    ({"addresses": "10.0.0.1"}, "addresses: expected an array, got str"),
    ({"addresses": [1]}, "addresses[0]: expected a string, got int"),
    ({"addresses": ["10.0.0.1", "10.0.0.300"]}, "addresses[1]: '10.0.0.300' is not an IP"),
    ({"addresses": ["host.example"]}, "addresses[0]: 'host.example' is not an IP address"),
    (["10.0.0.1"], "request body: expected an object, got list"),
]


@pytest.mark.parametrize(("body", "message"), BAD_CHECKINS)
def test_bad_checkins_name_the_field(api: Api, body: object, message: str) -> None:
    api.call("POST", "/api/v1/checkins/c1", json={"addresses": []})
    for method in ("POST", "PUT"):
        kw: dict[str, Any] = {"data": body} if isinstance(body, str) else {"json": body}
        response = api.call(method, "/api/v1/checkins/c1", **kw)
        assert response.status_code == 400, (method, response.json)
        assert response.json is not None and response.json["message"].startswith(message)
    record = api.call("GET", "/api/v1/checkins/c1").json
    assert record is not None and record["addresses"] == []


def test_oversized_bodies_are_413(api: Api) -> None:
    big = {**REQUEST, "cmdline": "x" * 70_000}
    response = api.call("POST", "/api/v1/builds", json=big)
    assert response.status_code == 413
    assert response.json is not None and "max_request_bytes" in response.json["message"]
    api.call("POST", "/api/v1/checkins/c1", json={"addresses": []})
    response = api.call("PUT", "/api/v1/checkins/c1", json={"addresses": ["10.0.0.1"] * 7000})
    assert response.status_code == 413


@pytest.mark.parametrize(
    "name",
    ["..", "build.json", "uki.efi.tmp", "%2e%2e", "..%2Fbuild.json", "uki.efi%00", "UKI.EFI"],
)
def test_odd_artifact_names_resolve_nothing(api: Api, name: str) -> None:
    build_id = api.built()["id"]
    response = api.client.get(f"/artifacts/{build_id}/{name}")
    assert response.status_code == 404
    assert response.json is not None and "message" in response.json


def test_unknown_ids_are_404(api: Api) -> None:
    for path in ("/api/v1/builds/" + "0" * 64, "/api/v1/builds/nope", "/api/v1/checkins/nope",
                 "/artifacts/nope/boot.iso"):  # fmt: skip
        response = api.call("GET", path)
        assert response.status_code == 404
        assert response.json is not None and response.json["message"].startswith(("id:",))


def test_artifact_of_a_pending_build_is_404(api: Api) -> None:
    import threading

    api.builder.gate = threading.Event()
    build_id = api.call("POST", "/api/v1/builds", json=REQUEST).json["id"]  # type: ignore[index]
    response = api.call("GET", f"/artifacts/{build_id}/boot.iso")
    assert response.status_code == 404 and "not completed" in response.json["message"]  # type: ignore[index]
    api.builder.gate.set()


@pytest.mark.parametrize(
    ("method", "path", "open_to_all"),
    [
        ("GET", "/healthz", True),
        ("HEAD", "/healthz", True),
        ("PUT", "/api/v1/checkins/c1", True),
        ("GET", "/artifacts/{id}/boot.iso", True),
        ("HEAD", "/artifacts/{id}/uki.efi", True),
        ("POST", "/api/v1/builds", False),
        ("GET", "/api/v1/builds", False),
        ("GET", "/api/v1/builds/{id}", False),
        ("DELETE", "/api/v1/builds/{id}", False),
        ("DELETE", "/api/v1/builds", False),
        ("POST", "/api/v1/checkins/c2", False),
        ("GET", "/api/v1/checkins/c1", False),
        ("DELETE", "/api/v1/checkins/c1", False),
        ("DELETE", "/api/v1/checkins", False),
        ("GET", "/api/v1/openapi.yaml", False),
        ("GET", "/no/such/path", False),
        ("POST", "/artifacts/{id}/boot.iso", False),
    ],
)
def test_acl(api: Api, method: str, path: str, open_to_all: bool) -> None:
    build_id = api.built()["id"]
    api.call("POST", "/api/v1/checkins/c1", json={"addresses": []})
    path = path.replace("{id}", build_id)
    body = {"json": REQUEST if "builds" in path else {"addresses": ["10.0.0.9"]}}
    extra = body if method in ("POST", "PUT") else {}
    response = api.client.open(path, method=method, environ_base={"REMOTE_ADDR": UNTRUSTED},
                                buffered=True, **extra)  # fmt: skip
    if open_to_all:
        assert response.status_code in (200, 204), response.data
    else:
        assert response.status_code == 403
        assert response.json is not None
        assert response.json["message"].startswith(f"client: {UNTRUSTED} may not {method}")
    # Trusted clients reach the same operation (unknown paths are 404 for them).
    trusted = api.client.open(path, method=method, environ_base={"REMOTE_ADDR": TRUSTED},
                              buffered=True, **extra)  # fmt: skip
    assert trusted.status_code != 403


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(tmp_path: Path) -> None:
    plain = make_api(tmp_path / "a")
    proxied = make_api(tmp_path / "b", trusted_proxies=["192.0.2.1/32"])
    try:
        spoof = {"X-Forwarded-For": "127.0.0.1"}
        outside = {"REMOTE_ADDR": UNTRUSTED}
        r = plain.client.get("/api/v1/builds", headers=spoof, environ_base=outside)
        assert r.status_code == 403
        via = {"REMOTE_ADDR": "192.0.2.1"}
        r = proxied.client.get("/api/v1/builds", headers={"X-Forwarded-For": "127.0.0.5"},
                               environ_base=via)  # fmt: skip
        assert r.status_code == 200
        r = proxied.client.get("/api/v1/builds",
                               headers={"X-Forwarded-For": "127.0.0.5, 203.0.113.9"},
                               environ_base=via)  # fmt: skip
        assert r.status_code == 403  # the hop the proxy saw is the untrusted one
    finally:
        plain.services.close(10)
        proxied.services.close(10)


def test_healthz_and_openapi(api: Api) -> None:
    r = api.call("GET", "/healthz")
    assert r.data == b"ok\n" and r.mimetype == "text/plain"
    r = api.call("GET", "/api/v1/openapi.yaml")
    assert r.status_code == 200 and b"operationId: CreateBuild" in r.data


def test_unsupported_method_is_405_with_allow(api: Api) -> None:
    r = api.client.patch("/api/v1/builds")
    assert r.status_code == 405 and "POST" in r.headers["Allow"]
    assert r.json is not None and "message" in r.json


def test_every_operation_of_the_document_is_routed(api: Api) -> None:
    routed = {(rule.rule, m) for rule in api.app.url_map.iter_rules() for m in rule.methods or ()}
    for template, item in CONTRACT.spec["paths"].items():
        flask_rule = template.replace("{id}", "<build_id>") if "builds" in template else template
        flask_rule = flask_rule.replace("{id}", "<checkin_id>" if "checkins" in template
                                        else "<build_id>").replace("{filename}", "<filename>")
        flask_rule = flask_rule.replace("{name}", "<name>")
        for method in item:
            if method in ("parameters",):
                continue
            assert (flask_rule, method.upper()) in routed, (template, method)


def test_downloads_beyond_the_thread_budget_get_503(tmp_path: Path) -> None:
    api = make_api(tmp_path, threads="6")  # 6 threads - 4 kept for the API = 2 downloads
    try:
        build_id = api.built()["id"]
        url = f"/artifacts/{build_id}/boot.iso"
        first = api.client.get(url, environ_base={"REMOTE_ADDR": UNTRUSTED})
        second = api.client.get(url, environ_base={"REMOTE_ADDR": UNTRUSTED})
        third = api.call("GET", url, client=UNTRUSTED)  # both slots are held: refused
        assert third.status_code == 503 and third.headers["Retry-After"] == "5"
        assert api.call("HEAD", url).status_code == 200  # HEAD sends no body: no slot
        first.close()
        assert api.call("GET", url).status_code == 200  # a slot came back
        second.close()
    finally:
        api.services.close(10)
