"""SSH into the ephemeral OS (and the installed OS) as root with a key, via asyncssh.

The reconcile engine pins host keys: it bakes one into each boot image and each installed OS
(:mod:`reconciler.engine.keys`) and connects with ``host_key``; any other key is refused with a
:class:`PermanentError` and never accepted. Without ``host_key`` (the lab's ad-hoc boots) no key
is pinned. Identity is also verified the way the design says, by reading
``/var/lib/cloud/data/instance-id`` once connected (:mod:`reconciler.engine.remote`).
Key material never reaches a log line or an error message: keys are loaded from a path or
given as an already parsed ``asyncssh.SSHKey``, and only the key's path is ever named.

The engine talks to :class:`Connection` through the small :class:`Shell` protocol, so its
steps are tested with a fake shell fed recorded outputs.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import asyncssh

from reconciler.errors import PermanentError, TemporaryError

LOG = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Result:
    command: str
    exit_status: int
    stdout: str
    stderr: str


class Shell(Protocol):
    """What the remote steps need from an SSH session."""

    host: str

    async def run(
        self, command: str, *, timeout: float, input: bytes | None = None, check: bool = True
    ) -> Result: ...


def load_key(path: Path) -> asyncssh.SSHKey:
    """Read a private key; errors name the file, never its content."""
    try:
        return asyncssh.read_private_key(str(path))
    except (OSError, asyncssh.KeyImportError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a usable private key"
        raise PermanentError(f"SSH key {path}: {reason}") from None


class Connection:
    """One SSH connection as root; use as ``async with await connect(...) as conn``."""

    def __init__(self, host: str, port: int, conn: asyncssh.SSHClientConnection) -> None:
        self.host = host
        self.port = port
        self._conn = conn

    async def run(
        self, command: str, *, timeout: float, input: bytes | None = None, check: bool = True
    ) -> Result:
        """Run ``command`` (a shell string); a non-zero exit fails when ``check``."""
        LOG.debug("%s: ssh + %s", self.host, command)
        try:
            proc = await asyncio.wait_for(
                self._conn.run(command, input=input, encoding=None, check=False), timeout
            )
        except TimeoutError:
            raise TemporaryError(
                f"{self.host}: `{command}` did not finish within {timeout:g} s", delay=10
            ) from None
        except (OSError, asyncssh.Error) as exc:
            raise TemporaryError(f"{self.host}: `{command}`: SSH failed: {exc}", delay=10) from None
        stdout = _text(proc.stdout)
        stderr = _text(proc.stderr)
        status = proc.exit_status if proc.exit_status is not None else -1
        result = Result(command, status, stdout, stderr)
        if check and status != 0:
            tail = stderr.strip()[-500:]
            raise PermanentError(
                f"{self.host}: `{command}` exited with status {status}"
                + (f": {tail}" if tail else "")
            )
        return result

    async def close(self) -> None:
        self._conn.close()
        await self._conn.wait_closed()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _text(data: object) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return str(data)


async def connect(
    host: str,
    *,
    key: asyncssh.SSHKey,
    port: int = 22,
    username: str = "root",
    timeout: float = CONNECT_TIMEOUT,
    host_key: asyncssh.SSHKey | None = None,
) -> Connection:
    """Connect once; a refused or timed-out connection is a :class:`TemporaryError`, a host
    key other than ``host_key`` a :class:`PermanentError`."""
    try:
        conn = await asyncio.wait_for(
            asyncssh.connect(
                host,
                port=port,
                username=username,
                client_keys=[key],
                known_hosts=None if host_key is None else ([host_key], [], []),
                agent_path=None,
                password=None,
                kbdint_auth=False,
                connect_timeout=timeout,
                login_timeout=timeout,
            ),
            timeout + 5,
        )
    except asyncssh.HostKeyNotVerifiable:
        raise PermanentError(
            f"{host}:{port}: the host key is not the one pinned for this server",
            hint="a different machine answers at this address, or its OS was reinstalled "
            "outside the reconciler; never accepted",
        ) from None
    except asyncssh.PermissionDenied:
        raise PermanentError(
            f"{host}:{port}: SSH refused the key for {username}",
            hint="the authorized_keys in the overlay must hold this key's public half",
        ) from None
    except (TimeoutError, OSError, asyncssh.Error) as exc:
        reason = str(exc) or type(exc).__name__
        raise TemporaryError(f"{host}:{port}: SSH not reachable: {reason}", delay=5) from None
    return Connection(host, port, conn)


async def wait_for_ssh(
    host: str,
    *,
    key: asyncssh.SSHKey,
    port: int = 22,
    deadline: float,
    interval: float = 2.0,
    host_key: asyncssh.SSHKey | None = None,
) -> Connection:
    """Connect, retrying until ``deadline`` (a ``time.monotonic()`` value)."""
    last: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TemporaryError(
                f"{host}:{port}: SSH did not come up in time; last error: {last}", delay=30
            )
        try:
            return await connect(host, key=key, port=port, timeout=min(CONNECT_TIMEOUT, remaining),
                                 host_key=host_key)
        except TemporaryError as exc:
            last = exc
        await asyncio.sleep(min(interval, max(deadline - time.monotonic(), 0)))


def quote(word: str) -> str:
    return shlex.quote(word)
