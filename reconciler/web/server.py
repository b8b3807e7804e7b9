"""The embedded production WSGI server: cheroot, one plain HTTP and one TLS listener.

Two cheroot servers share the Flask app in one process (gunicorn applies TLS to every bind;
waitress has no TLS: ../shared/LAB.md). Artifact bodies (:class:`FileRange`) bypass cheroot's
buffered writer: ``socket.sendfile`` on plain HTTP, large direct writes under TLS. That uses
cheroot internals (``req.conn.socket``, ``req.ensure_headers_sent``): cheroot is pinned in
pyproject.toml and tests/integration/test_service_live.py checks the bytes on both listeners.

:meth:`DualServer.stop` stops accepting, lets running requests finish and gives up at a
deadline (cheroot's own stop waits without bound for a download in progress).
"""

from __future__ import annotations

import email.utils
import logging
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cheroot import server as cheroot_server
from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from reconciler.errors import InputError, PermanentError
from reconciler.settings import HostPort, ServiceSettings
from reconciler.web.filerange import FileRange
from reconciler.web.http import log_access

LOG = logging.getLogger(__name__)

WsgiApp = Callable[..., Any]
KEEP_ALIVE_LIMIT = 1024


class SendfileGateway(wsgi.Gateway_10):
    """cheroot's WSGI 1.0 gateway, plus a zero-copy path for :class:`FileRange` bodies."""

    def respond(self) -> None:
        response = self.req.server.wsgi_app(self.env, self.start_response)
        try:
            if isinstance(response, FileRange) and not self.req.chunked_write:
                self._send_range(response)
            elif type(response) is list and len(response) <= 1 and not self.req.chunked_write:
                self._send_small(response[0] if response else b"")
            else:
                for chunk in filter(None, response):
                    if not isinstance(chunk, bytes):
                        raise ValueError("WSGI applications must yield bytes")
                    self.write(chunk)
        finally:
            self.req.ensure_headers_sent()
            if hasattr(response, "close"):
                response.close()

    def _send_small(self, body: bytes) -> None:
        """Headers and a small body in one socket write instead of two.

        Each write releases the GIL and must win it back from the busy HTTP threads: for
        the API's answers (a few hundred bytes) the second write cost more than the handler.
        The headers are still made by cheroot (``send_headers``); only where they go changes.
        """
        if not isinstance(body, bytes):
            raise ValueError("WSGI applications must yield bytes")
        rbo = self.remaining_bytes_out
        if rbo is not None and len(body) > rbo:
            # Let cheroot's own write report the mismatch exactly as it always did.
            self.write(body)
            return
        outheaders = self.req.outheaders
        if not any(name.lower() == b"date" for name, _ in outheaders):
            outheaders.append((b"Date", http_date()))  # what cheroot adds, made once a second
        conn = self.req.conn
        wfile = conn.wfile
        headers = _Collect()
        conn.wfile = headers
        try:
            self.req.ensure_headers_sent()
        finally:
            conn.wfile = wfile
        wfile.write(b"".join([*headers.parts, body]))
        if rbo is not None:
            self.remaining_bytes_out = rbo - len(body)

    def _send_range(self, body: FileRange) -> None:
        # The headers go out through cheroot's writer, which flushes on every write, so the
        # socket is ours from here on.
        self.req.ensure_headers_sent()
        if body.length == 0:
            return
        sock = self.req.conn.socket
        if isinstance(sock, ssl.SSLSocket):
            # No sendfile through TLS; one big write per chunk instead of cheroot's two copies.
            sent = 0
            for chunk in body:
                sock.sendall(chunk)
                sent += len(chunk)
        else:
            sent = _sendfile_blocking(sock, body.file.fileno(), body.start, body.length)
        if sent != body.length:
            # The file changed under us: the client must not take a short body for whole.
            self.req.close_connection = True
            raise OSError(f"sent {sent} of {body.length} bytes: the file was truncated")


def _sendfile_blocking(sock: socket.socket, fileno: int, offset: int, count: int) -> int:
    """``os.sendfile`` on the socket in blocking mode, bounded by a kernel send timeout.

    ``socket.sendfile`` on a socket with a timeout (cheroot's) polls before every
    ``sendfile``, and each call sends only what the socket buffer holds then: a 4 MiB range
    took dozens of poll/sendfile rounds, each giving up and winning back the GIL. Blocking,
    one call queues the whole range while the thread waits in the kernel without the GIL.
    ``SO_SNDTIMEO`` keeps cheroot's timeout: a client that stops reading makes ``sendfile``
    return short (or raise), and the caller treats a short count as a failed response.
    """
    timeout = sock.gettimeout()
    seconds = int(timeout or 0)
    micros = int(((timeout or 0) - seconds) * 1e6)
    sent = 0
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, micros))
    sock.settimeout(None)
    try:
        while sent < count:
            try:
                done = os.sendfile(sock.fileno(), fileno, offset + sent, count - sent)
            except BlockingIOError:  # SO_SNDTIMEO expired with nothing sent
                raise TimeoutError("timed out sending a file range") from None
            if done == 0:  # end of file: the file shrank
                break
            sent += done
    finally:
        sock.settimeout(timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 0, 0))
    return sent


_date: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The Date header's value (cheroot formats it anew for every response)."""
    global _date
    second = int(time.time())
    if _date[0] != second:
        _date = (second, email.utils.formatdate(second, usegmt=True).encode("latin-1"))
    return _date[1]


class _Collect:
    """Stands in for a connection's writer while cheroot writes the response headers."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(data)
        return len(data)


class LazyHandshakeAdapter(BuiltinSSLAdapter):
    """TLS whose handshake runs in a worker thread, not in cheroot's accept loop.

    cheroot's adapter handshakes right after accept(), in the one thread that also accepts
    and polls every connection of the listener: a client that connects and sends nothing
    would stall the TLS listener for the whole socket timeout. Here accept only wraps the
    socket; :class:`LazyHandshakeConnection` handshakes once the client has sent something.
    """

    def wrap(self, sock: Any) -> tuple[ssl.SSLSocket, dict[str, str]]:
        wrapped = self.context.wrap_socket(sock, do_handshake_on_connect=False, server_side=True)
        return wrapped, {"HTTPS": "on"}


class LazyHandshakeConnection(cheroot_server.HTTPConnection):
    _handshaken = False

    def communicate(self) -> bool:
        sock = self.socket
        if isinstance(sock, ssl.SSLSocket) and not self._handshaken:
            try:
                sock.do_handshake()
            except (OSError, ValueError) as exc:  # ssl.SSLError, timeouts, resets
                LOG.debug("TLS handshake with %s failed: %s", self.remote_addr, exc)
                return False
            self._handshaken = True
        result: bool = super().communicate()  # type: ignore[no-untyped-call]
        return result


@dataclass(frozen=True, slots=True)
class Listener:
    name: str  # the setting it comes from, for error messages
    address: HostPort
    cert: Path | None = None
    key: Path | None = None


def listeners(settings: ServiceSettings) -> list[Listener]:
    found = [Listener("listen", settings.listen)]
    if settings.tls_enabled:
        tls = Listener("tls_listen", settings.tls_listen, settings.tls_cert, settings.tls_key)
        found.append(tls)
    return found


class DualServer:
    """One cheroot server per listener, each with its own thread pool, in this process."""

    def __init__(self, app: WsgiApp, settings: ServiceSettings) -> None:
        self.settings = settings
        self._servers: list[tuple[Listener, wsgi.Server]] = []
        for listener in listeners(settings):
            server = wsgi.Server(
                (listener.address.host, listener.address.port),
                app,
                numthreads=settings.threads,
                max=settings.threads,
                request_queue_size=128,
                timeout=30,
                shutdown_timeout=int(settings.shutdown_timeout),
            )
            server.gateway = SendfileGateway
            server.max_request_header_size = 64 * 1024
            # cheroot answers "Connection: close" once 10 connections are open (its default),
            # so 50 polling clients or 16 BMC downloads would reconnect for every request.
            server.keep_alive_conn_limit = KEEP_ALIVE_LIMIT
            if listener.cert is not None and listener.key is not None:
                server.ssl_adapter = _ssl_adapter(listener.cert, listener.key)
                server.ConnectionClass = LazyHandshakeConnection
            self._servers.append((listener, server))
        self._threads: list[threading.Thread] = []

    def start(self) -> list[str]:
        """Bind every listener (errors name the setting), then serve in background threads."""
        bound = []
        for listener, server in self._servers:
            try:
                server.prepare()
            except OSError as exc:
                self.stop(0)
                raise PermanentError(
                    f"{listener.name}: cannot listen on {listener.address}: {exc}"
                ) from None
            host, port = server.socket.getsockname()[:2]
            scheme = "https" if server.ssl_adapter is not None else "http"
            bound.append(f"{scheme}://{HostPort(host, port)}")
        for listener, server in self._servers:
            name = f"http-{listener.name}"
            thread = threading.Thread(target=server.serve, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return bound

    def stop(self, timeout: float) -> bool:
        """Stop accepting, wait up to ``timeout`` s for running requests; True if all ended."""
        stoppers = []
        for listener, server in self._servers:
            if not server.ready:
                continue
            thread = threading.Thread(target=server.stop, name=f"stop-{listener.name}", daemon=True)
            thread.start()
            stoppers.append(thread)
        deadline = time.monotonic() + timeout
        for thread in stoppers + self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in stoppers + self._threads if t.is_alive()]
        log_access.flush(max(0.5, deadline - time.monotonic()))  # the lines of the last requests
        if alive:
            LOG.warning("requests still running after %.0f s; giving up on them", timeout)
        return not alive


def _ssl_adapter(cert: Path, key: Path) -> BuiltinSSLAdapter:
    try:
        adapter = LazyHandshakeAdapter(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise InputError(f"tls_cert/tls_key: cannot load {cert} and {key}: {exc}") from None
    # Modern clients only; TLS 1.2 is what BMC firmware still commonly speaks.
    adapter.context.minimum_version = ssl.TLSVersion.TLSv1_2
    return adapter
