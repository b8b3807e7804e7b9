"""Published OS images: GET/HEAD /images/<name> (reconciler/web/images.py) through the app's
test client, both request paths (fast front and Flask) answering alike, the ``published``
setting, and :func:`publish`. Every documented answer is checked against the OpenAPI document.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import TestResponse

from reconciler.errors import InputError
from reconciler.settings import load_settings
from reconciler.web import images
from reconciler.web.fast import FastFront
from reconciler.web.images import publish
from tests.unit.test_service_app import TRUSTED, UNTRUSTED, Api, make_api
from tests.unit.test_service_fast import CountingFlask, artifact_headers, call

IMAGE = b"target image bytes: " + bytes(range(256)) * 40  # 10,260 bytes
NAME = "debian-12-amd64.raw"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    made = make_api(tmp_path)
    yield made
    made.services.close(10)


@pytest.fixture
def published(api: Api, tmp_path: Path) -> Path:
    directory = tmp_path / "images" / "published"  # the default: <images>/published
    directory.mkdir()
    (directory / NAME).write_bytes(IMAGE)
    return directory


def get(api: Api, path: str, method: str = "GET", client: str = TRUSTED,
        **kw: Any) -> TestResponse:  # fmt: skip
    """A request that need not match a path of the OpenAPI document (odd names)."""
    return api.client.open(path, method=method, environ_base={"REMOTE_ADDR": client},
                           buffered=True, **kw)  # fmt: skip


def test_a_published_file_is_served_whole(api: Api, published: Path) -> None:
    response = api.call("GET", f"/images/{NAME}", client=UNTRUSTED)
    assert response.status_code == 200
    assert response.data == IMAGE
    assert response.headers["Content-Length"] == str(len(IMAGE))
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["ETag"] and response.headers["Last-Modified"]


def test_a_range_gets_206(api: Api, published: Path) -> None:
    response = api.call("GET", f"/images/{NAME}", headers={"Range": "bytes=20-275"})
    assert response.status_code == 206
    assert response.data == IMAGE[20:276]
    assert response.headers["Content-Range"] == f"bytes 20-275/{len(IMAGE)}"
    assert response.headers["Content-Length"] == "256"
    past = api.call("GET", f"/images/{NAME}", headers={"Range": f"bytes={len(IMAGE)}-"})
    assert past.status_code == 416
    assert past.headers["Content-Range"] == f"bytes */{len(IMAGE)}"


def test_head_has_the_length_and_no_body(api: Api, published: Path) -> None:
    response = api.call("HEAD", f"/images/{NAME}", client=UNTRUSTED)
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len(IMAGE))
    assert response.data == b""


def test_a_conditional_request_gets_304(api: Api, published: Path) -> None:
    etag = api.call("HEAD", f"/images/{NAME}").headers["ETag"]
    response = api.call("GET", f"/images/{NAME}", headers={"If-None-Match": etag})
    assert response.status_code == 304 and response.data == b""


def test_a_missing_name_is_404(api: Api, published: Path) -> None:
    response = api.call("GET", "/images/debian-13-amd64.raw")
    assert response.status_code == 404
    assert response.json == {"message": "name: 'debian-13-amd64.raw' is not a published image"}
    assert api.call("HEAD", "/images/debian-13-amd64.raw").status_code == 404


def test_no_published_directory_is_404(api: Api) -> None:
    assert api.call("GET", f"/images/{NAME}").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/images/..",
        "/images/.",
        "/images/.hidden",  # exists: refused by its name
        "/images/%2e%2e",
        "/images/..%2Fsecret",  # decoded to ../secret: two segments, no route
        "/images/../secret",
        "/images/sub/inner.raw",  # exists below a subdirectory
        "/images/sub%2Finner.raw",
        "/images/-dash",
        "/images/" + "a" * 129,
        "/images/caf%C3%A9.raw",
        "/images/nul%00.raw",
        "/images/has%20space",
        "/images/",
        "/images",
    ],
)
def test_odd_names_are_404(api: Api, published: Path, path: str) -> None:
    (published / ".hidden").write_bytes(b"HIDDEN CONTENT")
    (published.parent / "secret").write_bytes(b"SECRET CONTENT")
    (published / "sub").mkdir()
    (published / "sub" / "inner.raw").write_bytes(b"INNER CONTENT")
    for method in ("GET", "HEAD"):
        response = get(api, path, method)
        assert response.status_code == 404, (method, path, response.data)
        assert b"CONTENT" not in response.data
        if method == "GET":
            assert response.json is not None and "message" in response.json


def test_the_longest_name_is_served(api: Api, published: Path) -> None:
    name = "a" * 128
    (published / name).write_bytes(b"x")
    assert api.call("GET", f"/images/{name}").data == b"x"


@pytest.mark.parametrize("target", ["inside", "outside"])
def test_a_symlink_is_404_even_to_a_real_file(api: Api, published: Path, target: str) -> None:
    real = published / NAME if target == "inside" else published.parent / "outside.raw"
    real.write_bytes(IMAGE)
    (published / "link.raw").symlink_to(real)
    for method in ("GET", "HEAD"):
        response = api.call(method, "/images/link.raw")
        assert response.status_code == 404, method
    assert api.call("GET", f"/images/{NAME}").status_code == 200  # the file itself is served


def test_a_directory_is_404(api: Api, published: Path) -> None:
    (published / "dir.raw").mkdir()
    assert api.call("GET", "/images/dir.raw").status_code == 404
    assert api.call("HEAD", "/images/dir.raw").status_code == 404


def test_a_fifo_is_404_without_waiting_for_a_writer(api: Api, published: Path) -> None:
    os.mkfifo(published / "fifo.raw")  # a blocking open would hang this request forever
    assert api.call("GET", "/images/fifo.raw").status_code == 404


def test_the_acl_opens_get_and_head_only(api: Api, published: Path) -> None:
    assert api.call("GET", f"/images/{NAME}", client=UNTRUSTED).status_code == 200
    assert api.call("HEAD", f"/images/{NAME}", client=UNTRUSTED).status_code == 200
    for method in ("PUT", "DELETE", "POST"):
        refused = get(api, f"/images/{NAME}", method, client=UNTRUSTED)
        assert refused.status_code == 403, method
        assert refused.json is not None
        assert refused.json["message"].startswith(f"client: {UNTRUSTED} may not {method}")
        assert get(api, f"/images/{NAME}", method).status_code == 405  # trusted: no such op
    assert (published / NAME).read_bytes() == IMAGE


def test_downloads_share_the_artifacts_slots(api: Api, published: Path) -> None:
    slots = api.app.extensions["reconciler.downloads"]
    taken = 0
    while slots.acquire(blocking=False):
        taken += 1
    try:
        busy = api.call("GET", f"/images/{NAME}")
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "5"
        assert busy.json == {"message": "images: too many downloads in progress; retry later"}
        assert api.call("HEAD", f"/images/{NAME}").status_code == 200  # no body: no slot
    finally:
        for _ in range(taken):
            slots.release()
    assert api.call("GET", f"/images/{NAME}").status_code == 200


# --- the fast path ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("client", [TRUSTED, UNTRUSTED])
def test_image_requests_answer_like_flask(api: Api, published: Path, method: str,
                                          client: str) -> None:  # fmt: skip
    (published / ".hidden").write_bytes(b"hidden")
    (published / "link.raw").symlink_to(published / NAME)
    (published / "dir.raw").mkdir()
    fast, flask = api.app.wsgi_app, api.app.extensions["reconciler.flask_wsgi"]
    slots_before = free_slots_of(api)
    _, first, _ = call(flask, "GET", f"/images/{NAME}")
    etag, last_modified = dict(first)["ETag"], dict(first)["Last-Modified"]
    names = [NAME, "nope.raw", ".hidden", "link.raw", "dir.raw", "..", "a" * 129, "-x", "%2e"]
    seen = set()
    for name in names:
        for headers in artifact_headers(etag, last_modified):
            path = f"/images/{name}"
            ours = call(fast, method, path, headers=headers, client=client)
            theirs = call(flask, method, path, headers=headers, client=client)
            assert ours == theirs, (method, path, headers)
            seen.add(ours[0].split()[0])
    assert {"200", "304", "404"} <= seen
    if method == "GET":
        assert {"206", "416"} <= seen
    assert free_slots_of(api) == slots_before  # every body closed gave its slot back


def free_slots_of(api: Api) -> int:
    slots = api.app.extensions["reconciler.downloads"]
    taken = 0
    while slots.acquire(blocking=False):
        taken += 1
    for _ in range(taken):
        slots.release()
    return taken


def test_the_fast_path_answers_image_requests_itself(api: Api, published: Path) -> None:
    front = api.app.wsgi_app
    assert isinstance(front, FastFront)
    counting = CountingFlask()
    bypass = FastFront(counting, front.settings, front.services, front.verdicts, front.downloads)
    for method, path, client in [
        ("GET", f"/images/{NAME}", UNTRUSTED),
        ("HEAD", f"/images/{NAME}", TRUSTED),
        ("GET", "/images/nope.raw", TRUSTED),  # 404 worded here too
        ("GET", "/images/.hidden", TRUSTED),
    ]:
        status, _, _ = call(bypass, method, path, client=client)
        assert not status.startswith("418"), (method, path, client)
    for method, path, client in [
        ("DELETE", f"/images/{NAME}", TRUSTED),
        ("GET", "/images/caf%C3%A9.raw", TRUSTED),
        ("GET", "/images/sub%2Finner.raw", TRUSTED),
        ("GET", "/images/", TRUSTED),
    ]:
        status, _, _ = call(bypass, method, path, client=client)
        assert status.startswith("418"), (method, path, client)
    assert len(counting.paths) == 4


# --- the setting ------------------------------------------------------------------------------


def test_published_defaults_to_images_published(tmp_path: Path) -> None:
    settings = load_settings(None, {}, {"images": "/srv/images"})
    assert settings.published is None
    assert settings.published_dir == Path("/srv/images/published")


def test_published_from_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "service.yaml"
    config.write_text("images: /srv/images\npublished: /srv/published\n")
    assert load_settings(config, {}, {}).published_dir == Path("/srv/published")
    env = {"RECONCILER_PUBLISHED": "/env/published"}
    assert load_settings(config, env, {}).published_dir == Path("/env/published")
    with pytest.raises(InputError, match="^RECONCILER_PUBLISHED: empty path"):
        load_settings(None, {"RECONCILER_PUBLISHED": ""}, {})


def test_the_service_serves_the_configured_directory(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / NAME).write_bytes(IMAGE)
    api = make_api(tmp_path, published=str(elsewhere))
    try:
        for wsgi in (api.app.wsgi_app, api.app.extensions["reconciler.flask_wsgi"]):
            status, _, data = call(wsgi, "GET", f"/images/{NAME}")
            assert status == "200 OK" and data == IMAGE
    finally:
        api.services.close(10)


# --- publish ----------------------------------------------------------------------------------


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_publish_links_on_the_same_file_system(tmp_path: Path) -> None:
    src = tmp_path / "built.raw"
    src.write_bytes(IMAGE)
    directory = tmp_path / "published"  # created by publish
    digest = publish(src, directory, NAME)
    assert digest == hashlib.sha256(IMAGE).hexdigest()
    assert (directory / NAME).read_bytes() == IMAGE
    assert (directory / NAME).stat().st_ino == src.stat().st_ino
    assert leftovers(directory) == []
    # Published again as the very same inode: rename(2) does nothing, nothing is left over.
    assert publish(src, directory, NAME) == digest
    assert leftovers(directory) == []


def test_publish_copies_across_file_systems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           api: Api) -> None:  # fmt: skip
    def cross_device(*_: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(images.os, "link", cross_device)
    src = tmp_path / "built.raw"
    big = os.urandom(3 * images.CHUNK + 12345)  # several chunks and a short tail
    src.write_bytes(big)
    src.chmod(0o600)
    directory = tmp_path / "images" / "published"
    digest = publish(src, directory, NAME)
    assert digest == hashlib.sha256(big).hexdigest()
    target = directory / NAME
    assert target.read_bytes() == big
    assert target.stat().st_ino != src.stat().st_ino
    assert target.stat().st_mode & 0o777 == 0o644
    assert leftovers(directory) == []
    response = api.call("GET", f"/images/{NAME}")  # and the service serves those bytes
    assert hashlib.sha256(response.data).hexdigest() == digest


def test_publish_replaces_atomically(tmp_path: Path) -> None:
    directory = tmp_path / "published"
    old, new = tmp_path / "old.raw", tmp_path / "new.raw"
    old.write_bytes(b"old image")
    new.write_bytes(b"new image")
    publish(old, directory, NAME)
    with open(directory / NAME, "rb") as running:  # a download in progress
        assert publish(new, directory, NAME) == hashlib.sha256(b"new image").hexdigest()
        assert running.read() == b"old image"
    assert (directory / NAME).read_bytes() == b"new image"
    assert leftovers(directory) == []


@pytest.mark.parametrize("name", ["", ".hidden", "../escape", "a/b", "a" * 129, "caf\u00e9"])
def test_publish_refuses_a_name_the_service_would_not_serve(tmp_path: Path, name: str) -> None:
    src = tmp_path / "built.raw"
    src.write_bytes(IMAGE)
    with pytest.raises(InputError, match="^name: .* is not a valid image name"):
        publish(src, tmp_path / "published", name)
    assert not (tmp_path / "published").exists()  # checked before anything was made


def test_publish_refuses_a_missing_source(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a file"):
        publish(tmp_path / "missing.raw", tmp_path / "published", NAME)
    assert not (tmp_path / "published").exists()


def test_a_failed_copy_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def cross_device(*_: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(images.os, "link", cross_device)
    monkeypatch.setattr(images.os, "fsync", full)
    src = tmp_path / "built.raw"
    src.write_bytes(IMAGE)
    directory = tmp_path / "published"
    with pytest.raises(OSError, match="No space left"):
        publish(src, directory, NAME)
    assert list(directory.iterdir()) == []
