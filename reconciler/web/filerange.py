"""A byte range of an open file as a WSGI response body.

Iterating reads it in large chunks (any WSGI server, Flask's test client); the embedded
cheroot server (``reconciler.web.server``) recognizes the type and sends the range with
``socket.sendfile`` instead, or with large direct writes under TLS.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import BinaryIO

CHUNK = 1024 * 1024


class FileRange:
    def __init__(
        self,
        file: BinaryIO,
        start: int,
        length: int,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.file = file
        self.start = start
        self.length = length
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        fd = self.file.fileno()
        offset, remaining = self.start, self.length
        while remaining > 0:
            chunk = os.pread(fd, min(CHUNK, remaining), offset)
            if not chunk:
                return  # the file shrank: the server sees the short body and drops the link
            offset += len(chunk)
            remaining -= len(chunk)
            yield chunk

    def close(self) -> None:
        self.file.close()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()
