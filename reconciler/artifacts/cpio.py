"""The per-server CPIO overlay: a deterministic newc archive, gzip-compressed (pure).

The kernel unpacks every concatenated archive in the initramfs over the previous ones
(``init/initramfs.c``), so appending this overlay to the base initramfs adds or replaces files
and, for directories it names, sets their mode and owner (an existing directory gets the
overlay's mode: ``/root`` must be listed 0700 to stay 0700).

Entries (see :func:`overlay_entries`):

- every regular file and symlink of the request;
- every directory a file sits in, with that file's ``dirMode``/``dirUid``/``dirGid``; when
  several files share a directory, the first file in path order decides (the same order
  ``build_id`` normalizes to, so one id always means one archive);
- every ``dirOverrides`` path, with the override's mode and owner, replacing the above;
  directories above an override that no file implies get 0755 root.

Output is reproducible (mkosi ``make_cpio``: ``--reproducible --renumber-inodes``): entries
sorted by path, mtime 0, inodes numbered 1.. in that order, device numbers 0, names without
the leading ``/``, then ``TRAILER!!!``. gzip uses mtime 0 and no file name.
"""

from __future__ import annotations

import gzip
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from reconciler.artifacts.request import DEFAULT_DIR_MODE, BuildRequest

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"
# gzip -9: the overlay is a few KiB, so the best ratio costs nothing measurable.
GZIP_LEVEL = 9


@dataclass(frozen=True, slots=True)
class Entry:
    path: str  # absolute, as in the request
    mode: int  # type bits included (S_IFREG, S_IFLNK, S_IFDIR)
    uid: int
    gid: int
    data: bytes = b""  # file content, or the symlink target


def _parents(path: str) -> list[str]:
    """``/a/b/c`` -> ``['/a', '/a/b']``."""
    parts = path.split("/")[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def overlay_entries(req: BuildRequest) -> list[Entry]:
    """Every entry of the overlay archive, sorted by path."""
    entries: dict[str, Entry] = {}
    for f in sorted(req.files, key=lambda f: f.path):
        for parent in _parents(f.path):
            if parent not in entries:
                entries[parent] = Entry(parent, stat.S_IFDIR | f.dir_mode, f.dir_uid, f.dir_gid)
        if f.link_target is not None:
            data, kind = f.link_target.encode(), stat.S_IFLNK
        else:
            assert f.content is not None
            data, kind = f.content, stat.S_IFREG
        entries[f.path] = Entry(f.path, kind | f.mode, f.uid, f.gid, data)
    for d in req.dir_overrides:
        for parent in _parents(d.path):
            entries.setdefault(parent, Entry(parent, stat.S_IFDIR | DEFAULT_DIR_MODE, 0, 0))
        entries[d.path] = Entry(d.path, stat.S_IFDIR | d.mode, d.uid, d.gid)
    return [entries[p] for p in sorted(entries, key=lambda p: p.encode())]


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(ino: int, mode: int, uid: int, gid: int, nlink: int, size: int, name: bytes) -> bytes:
    # newc: magic + 13 eight-digit hex fields (ino, mode, uid, gid, nlink, mtime, filesize,
    # devmajor, devminor, rdevmajor, rdevminor, namesize, check), then the NUL-terminated name
    # padded so that header + name is a multiple of 4.
    fields = (ino, mode, uid, gid, nlink, 0, size, 0, 0, 0, 0, len(name) + 1, 0)
    head = NEWC_MAGIC + b"".join(b"%08X" % v for v in fields) + name + b"\0"
    return head + _pad4(len(head))


def write_newc(entries: Iterable[Entry]) -> bytes:
    """The uncompressed newc archive of ``entries`` (in the given order) plus the trailer."""
    out: list[bytes] = []
    ino = 0
    for ino, e in enumerate(entries, start=1):
        nlink = 2 if stat.S_ISDIR(e.mode) else 1
        out.append(_header(ino, e.mode, e.uid, e.gid, nlink, len(e.data), e.path[1:].encode()))
        out.append(e.data + _pad4(len(e.data)))
    out.append(_header(0, 0, 0, 0, 1, 0, TRAILER.encode()))
    return b"".join(out)


def overlay_cpio(req: BuildRequest) -> bytes:
    """The uncompressed overlay archive for ``req``."""
    return write_newc(overlay_entries(req))


def overlay_gzip(req: BuildRequest) -> bytes:
    """The overlay as one gzip member, byte-for-byte reproducible for a given zlib."""
    return gzip.compress(overlay_cpio(req), compresslevel=GZIP_LEVEL, mtime=0)


def initrd_padding(base_size: int) -> bytes:
    """Zeros after the base initramfs so the overlay starts on a 4-byte boundary.

    The kernel skips zero bytes between archives; an uncompressed newc part that does not
    start on a 4-byte boundary is dropped silently ("invalid magic", ../shared/LAB.md).
    """
    return _pad4(base_size)
