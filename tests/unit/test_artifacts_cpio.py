"""The CPIO overlay: golden bytes, then the real cpio tool reads it back."""

from __future__ import annotations

import base64
import gzip
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from reconciler.artifacts.cpio import initrd_padding, overlay_cpio, overlay_gzip
from reconciler.artifacts.request import BuildRequest, parse_build_request
from tests.conftest import skip_or_fail


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def request(files: list[dict[str, Any]], dirs: list[dict[str, Any]] | None = None) -> BuildRequest:
    return parse_build_request(
        {
            "kernel": "k",
            "initramfs": "i",
            "cmdline": "c",
            "architecture": "amd64",
            "files": files,
            "dirOverrides": dirs or [],
        }
    )


FIXED = request(
    [
        {"path": "/etc/a", "contentBase64": b64(b"hi\n"), "mode": "0600", "uid": 1, "gid": 2,
         "dirMode": "0750"},
        {"path": "/bin/x", "linkTarget": "busybox"},
    ],
    [{"path": "/root", "mode": "0700"}],
)  # fmt: skip


def newc(ino: int, mode: int, uid: int, gid: int, nlink: int, size: int, name: bytes) -> bytes:
    fields = [ino, mode, uid, gid, nlink, 0, size, 0, 0, 0, 0, len(name) + 1, 0]
    return b"070701" + b"".join(b"%08X" % f for f in fields)


# Written out field by field (ino, mode, uid, gid, nlink, size, name), then name + NUL padded
# to 4 with the 110-byte header, then data padded to 4.
GOLDEN = (
    newc(1, 0o40755, 0, 0, 2, 0, b"bin") + b"bin\0" + b"\0\0"
    + newc(2, 0o120777, 0, 0, 1, 7, b"bin/x") + b"bin/x\0" + b"busybox\0"
    + newc(3, 0o40750, 0, 0, 2, 0, b"etc") + b"etc\0" + b"\0\0"
    + newc(4, 0o100600, 1, 2, 1, 3, b"etc/a") + b"etc/a\0" + b"hi\n\0"
    + newc(5, 0o40700, 0, 0, 2, 0, b"root") + b"root\0\0"
    + newc(0, 0, 0, 0, 1, 0, b"TRAILER!!!") + b"TRAILER!!!\0" + b"\0\0\0"
)  # fmt: skip


def test_golden_bytes() -> None:
    assert overlay_cpio(FIXED) == GOLDEN
    assert len(GOLDEN) % 4 == 0


def test_header_literal() -> None:
    # One header spelled out in full, independent of the helper above.
    assert GOLDEN[:110] == (
        b"070701" b"00000001" b"000041ED" b"00000000" b"00000000" b"00000002" b"00000000"
        b"00000000" b"00000000" b"00000000" b"00000000" b"00000000" b"00000004" b"00000000"
    )  # fmt: skip


def test_same_request_same_bytes_in_any_order() -> None:
    files: list[dict[str, Any]] = [
        {"path": f"/d{i % 3}/f{i}", "contentBase64": b64(os.urandom(i))} for i in range(20)
    ]
    a = request(files)
    b = request(list(reversed(files)))
    assert overlay_cpio(a) == overlay_cpio(b)
    assert overlay_gzip(a) == overlay_gzip(b)
    assert gzip.decompress(overlay_gzip(a)) == overlay_cpio(a)


def test_shared_directory_takes_first_file_in_path_order() -> None:
    req = request(
        [
            {"path": "/x/b", "contentBase64": "", "dirMode": "0711"},
            {"path": "/x/a", "contentBase64": "", "dirMode": "0700", "dirUid": 5},
        ]
    )
    data = overlay_cpio(req)
    assert newc(1, 0o40700, 5, 0, 2, 0, b"x") in data


def test_dir_override_wins_and_creates_parents() -> None:
    req = request(
        [{"path": "/root/.ssh/authorized_keys", "contentBase64": b64(b"k"), "mode": "0600"}],
        [{"path": "/root/.ssh", "mode": "0700"}, {"path": "/root", "mode": "0700"},
         {"path": "/srv/empty/dir", "mode": "0750", "uid": 7}],
    )  # fmt: skip
    data = overlay_cpio(req)
    assert newc(1, 0o40700, 0, 0, 2, 0, b"root") in data
    assert newc(2, 0o40700, 0, 0, 2, 0, b"root/.ssh") in data
    assert newc(4, 0o40755, 0, 0, 2, 0, b"srv") in data
    assert newc(6, 0o40750, 7, 0, 2, 0, b"srv/empty/dir") in data


def test_initrd_padding() -> None:
    assert [len(initrd_padding(n)) for n in (0, 1, 2, 3, 4, 5)] == [0, 3, 2, 1, 0, 3]


BIG = request(
    [
        {"path": "/var/lib/cloud/seed/nocloud/meta-data", "contentBase64": b64(b"id: x\n")},
        {"path": "/var/lib/cloud/seed/nocloud/user-data", "contentBase64": b64(b"#cloud-config\n"),
         "mode": "0640", "uid": 0, "gid": 4},
        {"path": "/usr/local/bin/python", "linkTarget": "/usr/bin/python3"},
        {"path": "/opt/tool", "contentBase64": b64(b"#!/bin/sh\necho x\n"), "mode": "4755",
         "uid": 1000, "gid": 1000, "dirMode": "0711", "dirUid": 1000, "dirGid": 1000},
        {"path": "/empty", "contentBase64": ""},
    ],
    [{"path": "/root", "mode": "0700"}, {"path": "/var/lib/cloud", "mode": "0750", "gid": 3}],
)  # fmt: skip

# (path, mode, uid, gid, link target or None); what cpio must show.
BIG_EXPECTED = {
    "empty": (0o100644, 0, 0, None),
    "opt": (0o40711, 1000, 1000, None),
    "opt/tool": (0o104755, 1000, 1000, None),
    "root": (0o40700, 0, 0, None),
    "usr": (0o40755, 0, 0, None),
    "usr/local": (0o40755, 0, 0, None),
    "usr/local/bin": (0o40755, 0, 0, None),
    "usr/local/bin/python": (0o120777, 0, 0, "/usr/bin/python3"),
    "var": (0o40755, 0, 0, None),
    "var/lib": (0o40755, 0, 0, None),
    "var/lib/cloud": (0o40750, 0, 3, None),
    "var/lib/cloud/seed": (0o40755, 0, 0, None),
    "var/lib/cloud/seed/nocloud": (0o40755, 0, 0, None),
    "var/lib/cloud/seed/nocloud/meta-data": (0o100644, 0, 0, None),
    "var/lib/cloud/seed/nocloud/user-data": (0o100640, 0, 4, None),
}


@pytest.fixture
def cpio_tool() -> str:
    found = shutil.which("cpio")
    if found is None:
        skip_or_fail("cpio not installed (scripts/setup.sh installs it)")
    return found


def test_real_cpio_lists_every_entry(cpio_tool: str) -> None:
    out = subprocess.run(
        [cpio_tool, "-t", "-v", "--numeric-uid-gid", "--quiet"],
        input=overlay_cpio(BIG), capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    names = []
    for line in out.splitlines():
        fields = line.split()
        name = fields[8]
        names.append(name)
        mode, uid, gid, target = BIG_EXPECTED[name]
        assert (int(fields[2]), int(fields[3])) == (uid, gid), line
        if target:
            assert fields[-2:] == ["->", target], line
    assert names == sorted(BIG_EXPECTED)


def test_real_cpio_extracts_modes_owners_links(cpio_tool: str, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        skip_or_fail("restoring owners needs root")
    subprocess.run(
        [cpio_tool, "-idm", "--quiet", "--no-absolute-filenames"],
        input=gzip.decompress(overlay_gzip(BIG)), cwd=tmp_path, check=True,
    )  # fmt: skip
    for name, (mode, uid, gid, target) in BIG_EXPECTED.items():
        st = (tmp_path / name).lstat()
        assert (st.st_mode, st.st_uid, st.st_gid) == (mode, uid, gid), name
        if target:
            assert os.readlink(tmp_path / name) == target
    assert (tmp_path / "opt/tool").read_bytes() == b"#!/bin/sh\necho x\n"
    assert (tmp_path / "var/lib/cloud/seed/nocloud/meta-data").read_bytes() == b"id: x\n"
    assert (tmp_path / "empty").read_bytes() == b""
    assert (tmp_path / "opt/tool").stat().st_mtime == 0
