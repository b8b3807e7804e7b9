"""The artifact body's sendfile: the whole range on a live TCP connection, and a bounded wait
(cheroot's socket timeout, as SO_SNDTIMEO) when the client stops reading."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.web.server import _sendfile_blocking

MiB = 1 << 20


@pytest.fixture
def connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    with client, server:
        yield server, client


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "artifact.bin"
    path.write_bytes(os.urandom(32 * MiB))
    return path


def test_the_whole_range_arrives(connection: tuple[socket.socket, socket.socket],
                                 payload: Path) -> None:  # fmt: skip
    server, client = connection
    server.settimeout(10)
    received = hashlib.sha256()
    total = [0]

    def read() -> None:
        while total[0] < 20 * MiB:
            data = client.recv(1 << 16)
            if not data:
                return
            received.update(data)
            total[0] += len(data)

    reader = threading.Thread(target=read)
    reader.start()
    with open(payload, "rb") as f:
        sent = _sendfile_blocking(server, f.fileno(), 3 * MiB, 20 * MiB)
    reader.join(30)
    assert sent == 20 * MiB == total[0]
    assert received.hexdigest() == hashlib.sha256(
        payload.read_bytes()[3 * MiB: 23 * MiB]).hexdigest()
    assert server.gettimeout() == 10  # cheroot's timeout is back on the socket
    assert server.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, 16) == bytes(16)


def test_a_client_that_stops_reading_times_out(connection: tuple[socket.socket, socket.socket],
                                               payload: Path) -> None:  # fmt: skip
    server, client = connection
    server.settimeout(0.5)
    started = time.monotonic()
    with open(payload, "rb") as f, pytest.raises(TimeoutError):
        _sendfile_blocking(server, f.fileno(), 0, 32 * MiB)  # far more than the buffers hold
    # At most one timeout for the call that filled the buffers, one for the call that found
    # no room at all; generous for a loaded machine, far from "forever".
    assert time.monotonic() - started < 10
    assert server.gettimeout() == 0.5


def test_a_file_shorter_than_the_range_returns_short(
    connection: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    server, client = connection
    server.settimeout(10)
    path = tmp_path / "short.bin"
    path.write_bytes(b"x" * 1000)
    with open(path, "rb") as f:
        assert _sendfile_blocking(server, f.fileno(), 0, 5000) == 1000
    assert client.recv(5000) == b"x" * 1000
