"""GET/HEAD /images/<name>: published OS images, read-only, from the ``published`` directory.

The provisioning step's ephemeral OS fetches the target image with ``curl -fsSL`` from here
and checks its sha256. Only a plain file name resolves (:data:`NAME`: no slash, no leading
dot, at most 128 characters), and only a regular file directly in the directory: the last
component is opened with ``O_NOFOLLOW``, so a symlink placed there is 404 whatever it points
to, and so is a directory, a FIFO or a device. The answer is the artifacts' own
(:func:`reconciler.web.artifacts.serve_file`: ranges, conditionals, HEAD, download slots,
sendfile), and the fast path (:mod:`reconciler.web.fast`) answers it too.

:func:`publish` puts a file there for the lab: under a temporary name that :data:`NAME`
refuses (a leading dot), then renamed, so a client never sees half an image.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import threading
from collections.abc import Mapping
from pathlib import Path

from flask import Blueprint, Response, request

from reconciler.errors import InputError
from reconciler.web.artifacts import (
    DEFAULT_TYPE,
    Answer,
    download_slots,
    file_response,
    serve_file,
)
from reconciler.web.http import HttpError, show
from reconciler.web.services import settings

bp = Blueprint("images", __name__, url_prefix="/images")

# What a published image may be called; schemas/openapi.yaml states the same pattern.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}\Z")

# O_NOFOLLOW: a symlink as the last component fails with ELOOP instead of being followed.
# O_NONBLOCK: opening a FIFO must not wait for a writer; on a regular file it changes
# nothing (open(2)). O_NOCTTY: a terminal device must not become our controlling terminal.
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
# open(2) errors meaning "nothing to serve under that name": missing, a symlink (ELOOP), the
# directory itself missing or not a directory, a socket (ENXIO).
_ABSENT = frozenset({errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENXIO})

CHUNK = 1024 * 1024


def _not_found(name: str) -> HttpError:
    return HttpError(404, f"name: {show(name)} is not a published image")


def serve_image(
    published: str,
    slots: threading.BoundedSemaphore,
    method: str,
    name: str,
    headers: Mapping[str, str],
) -> Answer:
    """Status, headers and body (None: no body) of GET/HEAD /images/<name>.

    ``published`` is the directory (a str: this runs on the fast path, no pathlib). Raises
    :class:`HttpError` for 404, 416 and 503, like
    :func:`~reconciler.web.artifacts.serve_artifact`.
    """
    if NAME.match(name) is None:
        raise _not_found(name)
    try:
        fd = os.open(os.path.join(published, name), _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno in _ABSENT:
            raise _not_found(name) from None
        raise
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    if not regular:
        os.close(fd)
        raise _not_found(name)
    file = os.fdopen(fd, "rb")  # owned by the FileRange or closed in serve_file
    return serve_file(file, DEFAULT_TYPE, slots, method, headers, "images")


@bp.route("/<name>", methods=["GET", "HEAD"])
def image(name: str) -> Response:
    published = os.fspath(settings().published_dir)
    return file_response(serve_image(published, download_slots(), request.method, name,
                                     dict(request.headers)))


def publish(src: Path, published_dir: Path, name: str) -> str:
    """Put ``src`` into ``published_dir`` as ``name`` atomically; returns its sha256 (hex).

    A hard link when both are on the same file system, else a copy (mode 0644, fsynced),
    made under a temporary name in the directory and renamed over ``name``: a download
    already running keeps the old image, the next one gets the new. The sha256 is of the
    bytes published, computed in the one read that hashes (link) or copies (copy) them.
    """
    if NAME.match(name) is None:
        raise InputError(
            f"name: {show(name)} is not a valid image name",
            hint="letters, digits and ._+- only, not starting with a dot, up to 128 characters",
        )
    if not src.is_file():
        raise InputError(f"{src}: not a file")
    published_dir.mkdir(parents=True, exist_ok=True)
    tmp = published_dir / f".{name}.{os.urandom(6).hex()}.tmp"
    try:
        try:
            os.link(src, tmp)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP):
                raise
            digest = _copy(src, tmp)
        else:
            digest = _hash(tmp)
        os.replace(tmp, published_dir / name)
    finally:
        # Gone after a rename, except when ``name`` already was this very inode: then
        # rename(2) does nothing and leaves the temporary link behind.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return digest


def _hash(path: Path) -> str:
    with open(path, "rb", buffering=0) as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _copy(src: Path, dst: Path) -> str:
    """Copy ``src`` to a new file ``dst`` (0644, fsynced), hashing what is written."""
    sha = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(src, "rb", buffering=0) as reader, open(dst, "xb") as writer:
        while size := reader.readinto(buffer):
            sha.update(view[:size])
            writer.write(view[:size])
        writer.flush()
        os.fchmod(writer.fileno(), 0o644)
        os.fsync(writer.fileno())
    return sha.hexdigest()
