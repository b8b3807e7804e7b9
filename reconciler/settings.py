"""Settings of the build service (``reconciler serve``).

Three sources, later ones win: the YAML config file (``--config FILE``), the environment
(``RECONCILER_<KEY>``, upper-cased) and the command-line flags. Every setting is one row of
:data:`SETTINGS`: its YAML key, its environment variable, its parser. An error names the
source exactly as the user wrote it (``config.yaml: workers: ...``, ``RECONCILER_WORKERS: ...``,
``--listen: ...``).

Example config file::

    listen: 0.0.0.0:8080
    tls_listen: 0.0.0.0:8443
    tls_cert: /etc/reconciler/tls/cert.pem
    tls_key: /etc/reconciler/tls/key.pem
    public_url: http://198.18.0.1:8080
    public_tls_url: https://198.18.0.1:8443
    trusted: [127.0.0.0/8, 10.0.0.0/24]
    data_dir: /var/lib/reconciler/service
    images: /var/lib/reconciler/images
    published: /var/lib/reconciler/images/published   # the default: <images>/published
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from reconciler.errors import InputError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ENV_PREFIX = "RECONCILER_"


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    listen: HostPort = HostPort("0.0.0.0", 8080)
    # The TLS listener runs when a certificate and key are configured.
    tls_listen: HostPort = HostPort("0.0.0.0", 8443)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # What goes into artifact and status URLs; derived from the listeners when not set.
    public_url: str = ""
    public_tls_url: str = ""
    trusted: tuple[Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    # Peers whose X-Forwarded-For is believed (a reverse proxy); none by default.
    trusted_proxies: tuple[Network, ...] = ()
    data_dir: Path = Path("/var/lib/reconciler/service")
    images: Path = Path("/var/lib/reconciler/images")
    # Published OS images, served read-only at GET /images/<name>; None: <images>/published.
    published: Path | None = None
    queue_length: int = 16
    workers: int = 2
    max_request_bytes: int = 16 * 1024 * 1024
    # HTTP threads per listener: every running download holds one (sendfile), so size it for
    # the concurrent BMC downloads plus room for the JSON API.
    threads: int = 32
    shutdown_timeout: float = 10.0
    # The read-only status page and fleet API (GET /status, /api/v1/hosts, /api/v1/revision)
    # for untrusted clients too; by default only trusted networks see the fleet.
    status_public: bool = False

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None

    @property
    def published_dir(self) -> Path:
        """The directory GET /images/<name> serves: ``published``, or ``<images>/published``."""
        return self.images / "published" if self.published is None else self.published


# --- parsers: (raw value, source name) -> typed value; raise InputError naming the source --


def _text(value: object, source: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InputError(f"{source}: expected a string, got {type(value).__name__}")
    return str(value)


def parse_hostport(value: object, source: str) -> HostPort:
    text = _text(value, source).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise InputError(f"{source}: {text!r} is not HOST:PORT", hint="e.g. 0.0.0.0:8080")
    host = host.removeprefix("[").removesuffix("]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise InputError(f"{source}: {port_text!r} is not a port number (0-65535)")
    return HostPort(host, port)


def parse_url(value: object, source: str) -> str:
    text = _text(value, source).strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"{source}: {text!r} is not an http(s) URL", hint="e.g. http://host:8080")
    if parts.query or parts.fragment:
        raise InputError(f"{source}: {text!r} must not carry a query or fragment")
    return text


def parse_networks(value: object, source: str) -> tuple[Network, ...]:
    if isinstance(value, str):
        items: list[object] = [v for v in value.replace(",", " ").split() if v]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise InputError(f"{source}: expected a list of CIDRs, got {type(value).__name__}")
    networks = []
    for i, item in enumerate(items):
        text = _text(item, f"{source}[{i}]")
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise InputError(
                f"{source}[{i}]: {text!r} is not a CIDR", hint="e.g. 10.0.0.0/24"
            ) from None
    return tuple(networks)


def parse_path(value: object, source: str) -> Path:
    text = _text(value, source)
    if not text:
        raise InputError(f"{source}: empty path")
    return Path(text)


def parse_number(low: float, high: float, kind: type = float) -> Callable[[object, str], Any]:
    """A parser of an int or float setting within ``low``-``high``; errors name the source."""
    what = "an integer" if kind is int else "a number"

    def parse(value: object, source: str) -> Any:
        try:
            number = kind(_text(value, source))
        except ValueError:
            raise InputError(f"{source}: {value!r} is not {what}") from None
        if not low <= number <= high:
            raise InputError(f"{source}: {number} is out of range ({low:g}-{high:g})")
        return number

    return parse


def _parse_int(low: int, high: int) -> Callable[[object, str], int]:
    parse: Callable[[object, str], int] = parse_number(low, high, int)
    return parse


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def parse_bool(value: object, source: str) -> bool:
    """A YAML boolean, or its spelling in an environment variable or flag (true/false, yes/no,
    on/off, 1/0)."""
    if isinstance(value, bool):
        return value
    text = _text(value, source).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise InputError(f"{source}: {value!r} is not a boolean", hint="true or false")


def _parse_seconds(value: object, source: str) -> float:
    seconds: float = parse_number(0, 3600)(value, source)
    return seconds


# YAML key (== dataclass field) -> parser. The environment variable is RECONCILER_<KEY>.
SETTINGS: dict[str, Callable[[object, str], Any]] = {
    "listen": parse_hostport,
    "tls_listen": parse_hostport,
    "tls_cert": parse_path,
    "tls_key": parse_path,
    "public_url": parse_url,
    "public_tls_url": parse_url,
    "trusted": parse_networks,
    "trusted_proxies": parse_networks,
    "data_dir": parse_path,
    "images": parse_path,
    "published": parse_path,
    "queue_length": _parse_int(1, 100_000),
    "workers": _parse_int(1, 256),
    "max_request_bytes": _parse_int(1024, 1024 * 1024 * 1024),
    "threads": _parse_int(2, 1024),
    "shutdown_timeout": _parse_seconds,
    "status_public": parse_bool,
}
assert set(SETTINGS) == {f.name for f in fields(ServiceSettings)}


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


def read_config_file(path: Path) -> dict[str, object]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in SETTINGS)
    if unknown:
        raise InputError(
            f"{path}: {unknown[0]}: unknown setting", hint=f"known: {', '.join(SETTINGS)}"
        )
    return {str(k): v for k, v in data.items()}


def load_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
) -> ServiceSettings:
    """Merge file < environment < flags (flags whose value is None are not given)."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    if config_file is not None:
        for key, raw in read_config_file(config_file).items():
            values[key] = SETTINGS[key](raw, f"{config_file}: {key}")
    for key, parse in SETTINGS.items():
        if env_name(key) in env:
            values[key] = parse(env[env_name(key)], env_name(key))
    for key, raw in (flags or {}).items():
        if raw is not None:
            values[key] = SETTINGS[key](raw, "--" + key.replace("_", "-"))
    return finalize(replace(ServiceSettings(), **values))  # type: ignore[arg-type]


def _default_base(scheme: str, hostport: HostPort) -> str:
    host = hostport.host
    if host in ("0.0.0.0", "::", ""):
        # A wildcard is not an address a BMC can fetch from: use this host's name (no DNS
        # lookup at start; set public_url when BMCs need an address or another name).
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{hostport.port}"


def finalize(settings: ServiceSettings) -> ServiceSettings:
    """Cross-field checks and derived defaults, before anything is started."""
    if (settings.tls_cert is None) != (settings.tls_key is None):
        missing = "tls_key" if settings.tls_key is None else "tls_cert"
        raise InputError(f"{missing}: the TLS listener needs both tls_cert and tls_key")
    for key in ("tls_cert", "tls_key"):
        path = getattr(settings, key)
        if path is not None and not path.is_file():
            raise InputError(f"{key}: {path} does not exist or is not a file")
    public_url = settings.public_url or _default_base("http", settings.listen)
    public_tls_url = settings.public_tls_url or (
        _default_base("https", settings.tls_listen) if settings.tls_enabled else ""
    )
    return replace(settings, public_url=public_url, public_tls_url=public_tls_url)
