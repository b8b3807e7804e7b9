"""Service settings: config file < environment < flags, and errors that name their source."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from reconciler.errors import InputError
from reconciler.settings import HostPort, load_settings


def test_defaults_derive_public_urls_from_the_listeners() -> None:
    s = load_settings(None, {}, {"listen": "127.0.0.1:9000"})
    assert s.listen == HostPort("127.0.0.1", 9000)
    assert s.public_url == "http://127.0.0.1:9000"
    assert s.public_tls_url == ""  # no certificate, no TLS listener
    assert not s.tls_enabled
    assert ipaddress.ip_network("127.0.0.0/8") in s.trusted


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "service.yaml"
    config.write_text(
        "listen: 10.0.0.1:8080\nworkers: 3\nqueue_length: 7\ntrusted: [10.0.0.0/24]\n"
        "public_url: http://files.example/\ndata_dir: /srv/data\n"
    )
    env = {"RECONCILER_WORKERS": "5", "RECONCILER_TRUSTED": "192.0.2.0/24, 198.51.100.0/24"}
    s = load_settings(config, env, {"listen": "127.0.0.1:1", "trusted": ["203.0.113.0/24"]})
    assert s.listen == HostPort("127.0.0.1", 1)  # flag over file
    assert s.workers == 5  # env over file
    assert s.queue_length == 7  # file
    assert s.trusted == (ipaddress.ip_network("203.0.113.0/24"),)  # flag over env over file
    assert s.public_url == "http://files.example"  # trailing slash dropped
    assert s.data_dir == Path("/srv/data")


def test_environment_list_of_cidrs() -> None:
    s = load_settings(None, {"RECONCILER_TRUSTED": "192.0.2.0/24, 2001:db8::/32"}, {})
    assert [str(n) for n in s.trusted] == ["192.0.2.0/24", "2001:db8::/32"]


def test_tls_needs_cert_and_key(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(InputError, match="^tls_key: the TLS listener needs both"):
        load_settings(None, {}, {"tls_cert": str(cert)})
    key = tmp_path / "key.pem"
    with pytest.raises(InputError, match=f"^tls_key: {key} does not exist"):
        load_settings(None, {}, {"tls_cert": str(cert), "tls_key": str(key)})
    key.write_text("x")
    s = load_settings(
        None, {}, {"tls_cert": str(cert), "tls_key": str(key), "tls_listen": "127.0.0.1:9443"}
    )
    assert s.tls_enabled and s.public_tls_url == "https://127.0.0.1:9443"


@pytest.mark.parametrize(
    ("source", "value", "message"),
    [
        ("flag", ("listen", "8080"), "--listen: '8080' is not HOST:PORT"),
        ("flag", ("listen", "h:99999"), "--listen: '99999' is not a port number"),
        ("flag", ("public_url", "ftp://x"), "--public-url: 'ftp://x' is not an http(s) URL"),
        ("flag", ("public_url", "http://x/?a=1"), "must not carry a query"),
        ("flag", ("trusted", ["10.0.0.0/8", "nope"]), "--trusted[1]: 'nope' is not a CIDR"),
        ("env", ("RECONCILER_WORKERS", "two"), "RECONCILER_WORKERS: 'two' is not an integer"),
        ("env", ("RECONCILER_QUEUE_LENGTH", "0"), "RECONCILER_QUEUE_LENGTH: 0 is out of range"),
    ],
)
def test_bad_values_name_their_source(
    source: str, value: tuple[str, object], message: str
) -> None:
    key, raw = value
    with pytest.raises(InputError) as info:
        if source == "flag":
            load_settings(None, {}, {key: raw})
        else:
            load_settings(None, {key: str(raw)}, {})
    assert message in str(info.value)


def test_config_file_errors_name_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "service.yaml"
    config.write_text("workers: many\n")
    with pytest.raises(InputError, match=f"^{config}: workers: 'many' is not an integer"):
        load_settings(config, {}, {})
    config.write_text("wokers: 2\n")
    with pytest.raises(InputError, match=f"^{config}: wokers: unknown setting"):
        load_settings(config, {}, {})
    config.write_text("- a list\n")
    with pytest.raises(InputError, match="expected a mapping"):
        load_settings(config, {}, {})
    config.write_text("listen: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_settings(config, {}, {})
    with pytest.raises(InputError, match="cannot read config file"):
        load_settings(tmp_path / "missing.yaml", {}, {})
