"""Build request validation and the content-addressed build id."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from reconciler.artifacts.request import (
    DEFAULT_DIR_MODE,
    build_id,
    canonical_json,
    parse_build_request,
)
from reconciler.errors import InputError


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def body(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kernel": "vmlinuz-amd64",
        "initramfs": "initramfs-amd64.img",
        "cmdline": "console=ttyS0",
        "architecture": "amd64",
    }
    base.update(extra)
    return base


def test_minimal_request_defaults() -> None:
    req = parse_build_request(body())
    assert req.files == () and req.dir_overrides == () and req.tls_artifacts is False


def test_file_and_symlink_defaults() -> None:
    req = parse_build_request(
        body(
            files=[
                {"path": "/etc/a", "contentBase64": b64(b"hi")},
                {"path": "/usr/local/bin/python", "linkTarget": "/usr/bin/python3"},
            ]
        )
    )
    f, link = req.files
    assert (f.content, f.mode, f.uid, f.gid, f.dir_mode) == (b"hi", 0o644, 0, 0, DEFAULT_DIR_MODE)
    assert (link.link_target, link.mode, link.content) == ("/usr/bin/python3", 0o777, None)


def test_wrapped_base64_is_accepted() -> None:
    data = bytes(range(256)) * 3
    text = b64(data)
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    req = parse_build_request(body(files=[{"path": "/x", "contentBase64": wrapped}]))
    assert req.files[0].content == data


BAD: list[tuple[dict[str, Any], str]] = [
    ({"architecture": "riscv64"}, "architecture: 'riscv64' is not one of amd64, arm64"),
    ({"kernel": "../vmlinuz"}, "kernel: '../vmlinuz' is not a plain artifact name"),
    ({"kernel": ""}, "kernel: '' is not a plain artifact name"),
    ({"cmdline": 5}, "cmdline: expected a string, got a number"),
    ({"cmdline": "x" * 3000}, "cmdline: longer than"),
    ({"tlsArtifacts": "yes"}, "tlsArtifacts: expected a boolean, got a string"),
    ({"files": {}}, "files: expected an array, got an object"),
    ({"files": ["x"]}, "files[0]: expected an object, got a string"),
    ({"files": [{"contentBase64": ""}]}, "files[0].path: required"),
    ({"files": [{"path": "", "contentBase64": ""}]}, "files[0].path: empty path"),
    ({"files": [{"path": "etc/a", "contentBase64": ""}]}, "files[0].path: 'etc/a' is not absolute"),
    ({"files": [{"path": "/", "contentBase64": ""}]}, "files[0].path: '/' itself"),
    ({"files": [{"path": "/a/../b", "contentBase64": ""}]}, "files[0].path: '/a/../b' is not a"),
    ({"files": [{"path": "/a//b", "contentBase64": ""}]}, "files[0].path: '/a//b' is not a"),
    ({"files": [{"path": "/a/", "contentBase64": ""}]}, "files[0].path: '/a/' is not a"),
    ({"files": [{"path": "/a/./b", "contentBase64": ""}]}, "files[0].path: '/a/./b' is not a"),
    ({"files": [{"path": "/a\0b", "contentBase64": ""}]}, "files[0].path: contains a NUL"),
    ({"files": [{"path": "/a"}]}, "files[0]: regular file '/a' has no contentBase64"),
    ({"files": [{"path": "/a", "contentBase64": "!!"}]}, "files[0].contentBase64: invalid base64"),
    ({"files": [{"path": "/a", "contentBase64": "abc"}]}, "files[0].contentBase64: invalid base64"),
    (
        {"files": [{"path": "/a", "contentBase64": "", "mode": "0abc"}]},
        "files[0].mode: '0abc' is not an octal mode",
    ),
    (
        {"files": [{"path": "/a", "contentBase64": "", "mode": "17777"}]},
        "files[0].mode: '17777' exceeds 07777",
    ),
    ({"files": [{"path": "/a", "contentBase64": "", "mode": 644}]}, "files[0].mode: expected a"),
    ({"files": [{"path": "/a", "contentBase64": "", "uid": True}]}, "files[0].uid: expected an"),
    ({"files": [{"path": "/a", "contentBase64": "", "gid": -1}]}, "files[0].gid: -1 is out of"),
    ({"files": [{"path": "/a", "contentBase64": "", "dirMode": "8"}]}, "files[0].dirMode: '8'"),
    ({"files": [{"path": "/a", "linkTarget": ""}]}, "files[0].linkTarget: empty"),
    (
        {"files": [{"path": "/a", "contentBase64": ""}, {"path": "/a", "linkTarget": "/b"}]},
        "files[1].path: '/a' is given twice (also files[0].path)",
    ),
    (
        {"files": [{"path": "/l", "linkTarget": "/x"}, {"path": "/l/f", "contentBase64": ""}]},
        "files[1].path: '/l/f' is below the symlink '/l' (files[0].path)",
    ),
    (
        {"files": [{"path": "/a/b/c", "contentBase64": ""}, {"path": "/a", "contentBase64": ""}]},
        "files[0].path: '/a/b/c' is below the regular file '/a' (files[1].path)",
    ),
    (
        {"dirOverrides": [{"path": "/root"}, {"path": "/root", "mode": "0700"}]},
        "dirOverrides[1].path: '/root' is given twice (also dirOverrides[0].path)",
    ),
    (
        {"files": [{"path": "/f", "contentBase64": ""}], "dirOverrides": [{"path": "/f"}]},
        "dirOverrides[0].path: '/f' is also a file (files[0].path)",
    ),
    (
        {"files": [{"path": "/f", "contentBase64": ""}], "dirOverrides": [{"path": "/f/d"}]},
        "dirOverrides[0].path: '/f/d' is below the regular file '/f'",
    ),
    ({"dirOverrides": [{"path": "/d", "mode": "0999"}]}, "dirOverrides[0].mode: '0999' is not"),
    ({"dirOverrides": [{"path": "relative"}]}, "dirOverrides[0].path: 'relative' is not absolute"),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_bad_input_names_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError) as err:
        parse_build_request(body(**change))
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)
    assert err.value.exit_code == 2


@pytest.mark.parametrize("missing", ["kernel", "initramfs", "cmdline", "architecture"])
def test_required_fields(missing: str) -> None:
    raw = body()
    del raw[missing]
    with pytest.raises(InputError, match=f"^{missing}: required"):
        parse_build_request(raw)


def test_not_an_object() -> None:
    with pytest.raises(InputError, match="^request: expected an object, got an array"):
        parse_build_request([])


def test_build_id_ignores_order_and_spelled_out_defaults() -> None:
    a = body(
        files=[
            {"path": "/b", "contentBase64": b64(b"2")},
            {"path": "/a", "contentBase64": b64(b"1")},
        ],
        dirOverrides=[{"path": "/y"}, {"path": "/x", "mode": "700"}],
    )
    b = body(
        files=[
            {"path": "/a", "contentBase64": b64(b"1"), "mode": "0644", "uid": 0, "dirMode": "755"},
            {"path": "/b", "contentBase64": b64(b"2"), "gid": 0},
        ],
        dirOverrides=[{"path": "/x", "mode": "0700"}, {"path": "/y", "mode": "0755", "uid": 0}],
        tlsArtifacts=False,
    )
    ida, idb = build_id(parse_build_request(a)), build_id(parse_build_request(b))
    assert ida == idb and len(ida) == 64
    assert b" " not in canonical_json(parse_build_request(a))


@pytest.mark.parametrize(
    "change",
    [
        {"cmdline": "console=ttyS0 quiet"},
        {"architecture": "arm64"},
        {"tlsArtifacts": True},
        {"files": [{"path": "/a", "contentBase64": b64(b"1"), "mode": "0600"}]},
        {"files": [{"path": "/a", "linkTarget": "/b"}]},
        {"dirOverrides": [{"path": "/root", "mode": "0700"}]},
    ],
)
def test_build_id_changes_with_content(change: dict[str, Any]) -> None:
    assert build_id(parse_build_request(body())) != build_id(parse_build_request(body(**change)))


def test_build_id_is_stable() -> None:
    # Pinned: the id is a cache key shared with stored builds; changing the normalization
    # silently orphans every cached artifact.
    req = parse_build_request(body(files=[{"path": "/etc/motd", "contentBase64": b64(b"hi\n")}]))
    assert canonical_json(req) == (
        b'{"architecture":"amd64","cmdline":"console=ttyS0","dirOverrides":[],"files":'
        b'[{"contentBase64":"aGkK","dirGid":0,"dirMode":"0755","dirUid":0,"gid":0,'
        b'"mode":"0644","path":"/etc/motd","uid":0}],"initramfs":"initramfs-amd64.img",'
        b'"kernel":"vmlinuz-amd64","tlsArtifacts":false}'
    )


def test_lone_surrogate_is_refused_naming_the_field() -> None:
    body = {"kernel": "k", "initramfs": "i", "cmdline": "a\ud800", "architecture": "amd64"}
    with pytest.raises(InputError, match=r"^cmdline: contains an unpaired surrogate"):
        parse_build_request(body)


def test_base64_allows_only_ascii_whitespace() -> None:
    ok = {"path": "/a", "contentBase64": "aGVs\nbG8=\n"}
    bad = {"path": "/a", "contentBase64": "aGVs\u2028bG8="}
    base = {"kernel": "k", "initramfs": "i", "cmdline": "", "architecture": "amd64"}
    assert parse_build_request({**base, "files": [ok]}).files[0].content == b"hello"
    with pytest.raises(InputError, match=r"^files\[0\]\.contentBase64: invalid base64"):
        parse_build_request({**base, "files": [bad]})
