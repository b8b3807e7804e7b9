"""The HTTP side of Redfish: a sushy ``Connector`` whose timeouts and retries we own.

sushy's stock connector makes 3 attempts with 2 s sleeps even with ``server_side_retries=0``,
so a dead BMC takes ~27 s to fail, and it resends a POST/PATCH after a read timeout, so a
``ComputerSystem.Reset`` could run twice (see ../shared/LAB.md, "Redfish peers"). This module
replaces ``Connector._op`` (the one method every sushy request goes through) with a policy
that is ours:

* every request has a connect timeout and a read timeout (``ClientSettings``);
* a request that never reached the BMC (refused, no route, connect timeout) may be retried
  whatever its method: nothing was sent;
* GET is idempotent: it is retried on read timeouts, dropped connections and 5xx answers,
  with exponential backoff, ``get_attempts`` times in all;
* POST/PATCH/PUT/DELETE that were sent are never resent here: a read timeout becomes
  :class:`HttpNoAnswer` (the outcome is unknown) and an error answer becomes
  :class:`HttpFailure`. Whether to retry after an explicit *rejection* is decided per
  operation and per vendor profile by the driver.

Authentication is HTTP Basic on every request (the seed's stateless model: no sessions to
leak or expire), set through sushy's :class:`sushy.auth.BasicAuth`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib import parse as urlparse

import requests
import sushy
from requests import exceptions as req_exc
from sushy import auth as sushy_auth
from sushy import connector as sushy_connector
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from reconciler.errors import InputError
from reconciler.log import redact

LOG = logging.getLogger(__name__)

IDEMPOTENT = frozenset({"GET", "HEAD"})
RETRYABLE_STATUS = frozenset({500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Timeouts and retries for one BMC. The defaults make a dead BMC fail in ~5 s."""

    connect_timeout: float = 3.0
    read_timeout: float = 20.0
    # InsertMedia and HttpBootUri PATCHes can make the BMC fetch the image before answering
    # (the sushy-tools emulator downloads the whole ISO inside the request).
    action_timeout: float = 120.0
    get_attempts: int = 3
    connect_attempts: int = 2
    backoff: float = 0.5
    backoff_max: float = 4.0
    # Ask the BMC to close each connection (sushy's default: some BMCs choke on long-lived
    # connections). The benchmark turns keep-alive on for the emulator.
    keep_alive: bool = False
    # How often to poll while waiting for a power state or for media to show up.
    poll_interval: float = 1.0

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout", "action_timeout", "poll_interval"):
            if getattr(self, name) <= 0:
                raise InputError(f"redfish {name} must be positive")
        if self.get_attempts < 1 or self.connect_attempts < 1:
            raise InputError("redfish get_attempts and connect_attempts must be at least 1")


@dataclass(frozen=True, slots=True)
class BmcEndpoint:
    """Where a BMC is and how to talk to it.

    ``verify`` is ``True`` (system CA store), ``False`` (no verification: lab BMCs with
    self-signed certificates) or the path of a CA bundle file/directory.
    """

    url: str
    username: str
    password: str = field(repr=False)
    verify: bool | Path = True
    system_id: str | None = None

    def __post_init__(self) -> None:
        parsed = urlparse.urlsplit(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise InputError(
                f"--bmc {redact(self.url)!r}: expected http(s)://HOST[:PORT]",
                hint="for example https://10.0.0.5",
            )
        if parsed.username or parsed.password:
            raise InputError(
                "--bmc: credentials do not belong in the URL", hint="use --credentials REF"
            )
        if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
            raise InputError(f"--bmc {self.url!r}: give only scheme, host and port")
        if isinstance(self.verify, Path) and not self.verify.exists():
            raise InputError(f"--ca-bundle {self.verify}: no such file or directory")

    @property
    def base_url(self) -> str:
        parsed = urlparse.urlsplit(self.url)
        return f"{parsed.scheme}://{parsed.netloc}"

    @property
    def name(self) -> str:
        """How messages name this BMC: its base URL, never the credentials."""
        return self.base_url


class HttpFailure(Exception):
    """The BMC answered with an error status. Carries what the driver needs to decide."""

    def __init__(self, method: str, path: str, status: int, body: object) -> None:
        super().__init__(f"HTTP {status} from {method} {path}")
        self.method = method
        self.path = path
        self.status = status
        self.body = body


class TransportFailure(Exception):
    """No usable answer: ``kind`` is ``unreachable``, ``tls``, ``no-answer`` or ``broken``."""

    def __init__(self, kind: str, method: str, path: str, detail: str) -> None:
        super().__init__(f"{kind} on {method} {path}: {detail}")
        self.kind = kind
        self.method = method
        self.path = path
        self.detail = detail


def _never_connected(exc: BaseException) -> bool:
    """True when the request cannot have reached the BMC (so resending is safe)."""
    if isinstance(exc, req_exc.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


def _body(response: requests.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return response.text


class Connector(sushy_connector.Connector):  # type: ignore[misc]
    """sushy's connector with our request policy (see the module docstring)."""

    def __init__(
        self,
        endpoint: BmcEndpoint,
        settings: ClientSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        verify: bool | str = (
            str(endpoint.verify) if isinstance(endpoint.verify, Path) else endpoint.verify
        )
        super().__init__(
            endpoint.base_url,
            verify=verify,
            default_request_timeout=settings.read_timeout,
            connect_timeout=settings.connect_timeout,
        )
        self.settings = settings
        self._sleep = sleep
        self._lock = threading.Lock()
        self.requests_sent = 0
        if settings.keep_alive:
            del self._session.headers["Connection"]

    def _op(
        self,
        method: str,
        path: str = "",
        data: Any = None,
        headers: Mapping[str, str | None] | None = None,
        blocking: bool = False,
        timeout: float | None = None,
        **extra: Any,
    ) -> requests.Response:
        url = path if urlparse.urlsplit(path).netloc else urlparse.urljoin(self._url, path)
        short = urlparse.urlsplit(url).path or "/"
        sent_headers: dict[str, str] = {}
        for key, value in (headers or {}).items():
            if value is not None:
                sent_headers[key] = value
        lower = {k.lower() for k in sent_headers}
        if data is not None and "content-type" not in lower:
            sent_headers["Content-Type"] = "application/json"
        if "odata-version" not in lower:
            sent_headers["OData-Version"] = "4.0"
        if "accept-encoding" not in lower:
            # Compression makes some BMCs answer weak ETags (catalogue Q26).
            sent_headers["Accept-Encoding"] = "identity"
        read_timeout = timeout or self.settings.read_timeout
        idempotent = method.upper() in IDEMPOTENT
        attempt = 0
        while True:
            attempt += 1
            with self._lock:
                self.requests_sent += 1
            LOG.debug("%s %s (attempt %d)", method, url, attempt)
            try:
                response: requests.Response = self._session.request(
                    method,
                    url,
                    json=data,
                    headers=sent_headers,
                    verify=self._verify,
                    timeout=(self.settings.connect_timeout, read_timeout),
                    **extra,
                )
            except req_exc.SSLError as exc:
                raise TransportFailure("tls", method, short, _tail(exc)) from None
            except (req_exc.ConnectionError, req_exc.Timeout) as exc:
                if _never_connected(exc):
                    if attempt < self.settings.connect_attempts:
                        self._backoff(attempt, None)
                        continue
                    raise TransportFailure("unreachable", method, short, _tail(exc)) from None
                kind = "no-answer" if isinstance(exc, req_exc.ReadTimeout) else "broken"
                if idempotent and attempt < self.settings.get_attempts:
                    self._backoff(attempt, None)
                    continue
                # A POST/PATCH that reached the BMC is never resent: it may have run.
                raise TransportFailure(kind, method, short, _tail(exc)) from None
            except req_exc.RequestException as exc:
                raise TransportFailure("broken", method, short, _tail(exc)) from None
            if response.status_code < 400:
                return response
            if (
                idempotent
                and response.status_code in RETRYABLE_STATUS
                and attempt < self.settings.get_attempts
            ):
                self._backoff(attempt, response.headers.get("Retry-After"))
                continue
            raise HttpFailure(method, short, response.status_code, _body(response))

    def _backoff(self, attempt: int, retry_after: str | None) -> None:
        delay = min(self.settings.backoff * 2 ** (attempt - 1), self.settings.backoff_max)
        if retry_after and retry_after.isdigit():
            delay = min(float(retry_after), self.settings.backoff_max)
        self._sleep(delay)


def _tail(exc: BaseException) -> str:
    """A short, redacted description of a requests exception (no nested repr soup)."""
    text = str(exc)
    for marker in ("Caused by ", "(Caused by"):
        if marker in text:
            text = text.split(marker, 1)[1]
    text = text.strip("()' ")
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text and "connect" in text.lower():
        return "connect timed out"
    if "Read timed out" in text:
        return "no answer (read timed out)"
    return redact(" ".join(text.split()))[:200]


def open_root(
    endpoint: BmcEndpoint,
    settings: ClientSettings,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[sushy.Sushy, Connector]:
    """Connect: GET the service root through sushy with Basic auth on every request."""
    connector = Connector(endpoint, settings, sleep=sleep)
    auth = sushy_auth.BasicAuth(username=endpoint.username, password=endpoint.password)
    root = sushy.Sushy(endpoint.base_url, auth=auth, connector=connector)
    return root, connector
