"""Settings of the reconcile loop (``reconciler run``): flags > ``RECONCILER_<KEY>`` > the
config file, as for the build service (:mod:`reconciler.settings`), whose settings the embedded
service takes from the config file's ``service:`` mapping.

Example ``--config`` file::

    repo: git@git.example.net:infra/servers.git
    branch: main
    path: datacenter-1          # the inventory's directory inside the repository
    data_dir: /var/lib/reconciler
    poll_interval: 60
    max_concurrent_provisioning: 10
    build_service_url: ""       # empty: start the build service embedded
    service:
      listen: 0.0.0.0:8080
      public_url: http://10.0.0.2:8080
      images: /var/lib/reconciler/images
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from reconciler.errors import InputError
from reconciler.settings import (
    SETTINGS as SERVICE_SETTINGS,
)
from reconciler.settings import (
    ServiceSettings,
    env_name,
    finalize,
    parse_bool,
    parse_number,
    parse_path,
    parse_url,
)


@dataclass(frozen=True, slots=True)
class RunSettings:
    repo: str = ""
    branch: str = "main"
    path: str = ""
    data_dir: Path = Path("/var/lib/reconciler")
    secrets_dir: Path | None = None
    poll_interval: float = 60.0
    observe_interval: float = 120.0  # ask a BMC for power at most this often when idle
    oob_interval: float = 86400.0  # Redfish hardware inventory of each server this often
    git_timeout: float = 60.0
    orphan_retention: float = 7 * 86400.0  # then a server gone from git leaves the state
    build_service_url: str = ""  # empty: embedded
    max_concurrent_provisioning: int = 10
    max_attempts: int = 5  # per desired target, then Stalled
    backoff_base: float = 10.0
    backoff_max: float = 900.0
    redfish_threads: int = 16
    graceful_timeout: float = 60.0  # then ForceOff
    # The git webhook's shared secret, as a credentials reference (never the secret itself:
    # RECONCILER_CRED_<REF> or <secrets_dir>/<ref>); empty: no webhook (the route answers 404).
    webhook_secret: str = ""
    # Commit-back of inspection reports (reconciler/engine/writeback.py, docs/writeback.md).
    writeback: bool = True
    push_branch: str = ""  # empty: the watched branch
    git_ssh_key: Path | None = None  # a deploy key's path (the key itself never in settings)
    git_token: str = ""  # an HTTPS token's credentials reference (RECONCILER_CRED_<REF>)
    git_author: str = "reconciler <reconciler@localhost>"
    lease_ttl: float = 600.0  # the writer's lease on the push branch, renewed by its writes
    lease_ref: str = ""  # empty: refs/reconciler/lease/<push branch>
    service: ServiceSettings = field(default_factory=ServiceSettings)

    @property
    def state_db(self) -> Path:
        return self.data_dir / "state.db"

    @property
    def clone_dir(self) -> Path:
        return self.data_dir / "repo"

    @property
    def ssh_dir(self) -> Path:
        return self.data_dir / "ssh"

    def pid_file(self) -> Path:
        return self.data_dir / "run.pid"


def _text(value: object, source: str) -> str:
    if not isinstance(value, str | int | float):
        raise InputError(f"{source}: expected a string, got {type(value).__name__}")
    return str(value)


def _branch(value: object, source: str) -> str:
    text = _text(value, source)
    if not text or text.startswith("-") or ".." in text or " " in text:
        raise InputError(f"{source}: {text!r} is not a branch name")
    return text


def _subdir(value: object, source: str) -> str:
    text = _text(value, source).strip("/")
    if text.startswith(".") or "/.." in f"/{text}":
        raise InputError(f"{source}: {text!r} must be a directory inside the repository")
    return text


def _reference(value: object, source: str) -> str:
    from reconciler.adapters.secrets import REFERENCE  # the shape a BMC's reference has

    text = _text(value, source).strip()
    if not text:
        raise InputError(f"{source}: empty; name a credentials reference holding the secret, "
                         "or leave the setting out (no webhook)")
    if not REFERENCE.match(text):
        raise InputError(f"{source}: not a credentials reference",
                         hint="letters, digits, '.', '_' and '-', naming RECONCILER_CRED_<REF> "
                         "or a file in the secrets directory (never the secret itself)")
    return text


def _author(value: object, source: str) -> str:
    from reconciler.engine.writeback import parse_author

    text = _text(value, source).strip()
    try:
        parse_author(text)
    except InputError as exc:
        raise InputError(f"{source}: {exc.message}", hint=exc.hint) from None
    return text


def _lease_ref(value: object, source: str) -> str:
    from reconciler.engine.writeback import check_ref

    text = _text(value, source).strip()
    try:
        return check_ref(text) if text else ""
    except InputError as exc:
        raise InputError(f"{source}: {exc.message}", hint=exc.hint) from None


RUN_SETTINGS: dict[str, Callable[[object, str], Any]] = {
    "repo": _text,
    "branch": _branch,
    "path": _subdir,
    "data_dir": parse_path,
    "secrets_dir": parse_path,
    "poll_interval": parse_number(1, 86400),
    "observe_interval": parse_number(0, 86400),
    "oob_interval": parse_number(60, 365 * 86400),
    "git_timeout": parse_number(1, 3600),
    "orphan_retention": parse_number(0, 10 * 365 * 86400),
    "build_service_url": lambda v, s: parse_url(v, s) if v else "",
    "max_concurrent_provisioning": parse_number(1, 10_000, int),
    "max_attempts": parse_number(1, 1000, int),
    "backoff_base": parse_number(0, 3600),
    "backoff_max": parse_number(0, 86400),
    "redfish_threads": parse_number(1, 1024, int),
    "graceful_timeout": parse_number(0, 3600),
    "webhook_secret": _reference,
    "writeback": parse_bool,
    "push_branch": lambda v, s: _branch(v, s) if _text(v, s) else "",
    "git_ssh_key": parse_path,
    "git_token": lambda v, s: _reference(v, s) if _text(v, s).strip() else "",
    "git_author": _author,
    "lease_ttl": parse_number(30, 86400),
    "lease_ref": _lease_ref,
}
assert set(RUN_SETTINGS) | {"service"} == {f.name for f in fields(RunSettings)}


def load_run_settings(config: Mapping[str, Any] | None, source: str,
                      env: Mapping[str, str] | None = None,
                      flags: Mapping[str, object] | None = None) -> RunSettings:
    """Merge the config file's mapping < environment < flags (None values are not given)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    service: dict[str, Any] = {}
    for key, raw in (config or {}).items():
        if key == "service":
            if not isinstance(raw, Mapping):
                raise InputError(f"{source}: service: expected a mapping of settings")
            for skey, sraw in raw.items():
                if skey not in SERVICE_SETTINGS:
                    raise InputError(f"{source}: service.{skey}: unknown setting",
                                     hint=f"known: {', '.join(SERVICE_SETTINGS)}")
                service[skey] = SERVICE_SETTINGS[skey](sraw, f"{source}: service.{skey}")
            continue
        if key not in RUN_SETTINGS:
            raise InputError(f"{source}: {key}: unknown setting",
                             hint=f"known: {', '.join([*RUN_SETTINGS, 'service'])}")
        values[key] = RUN_SETTINGS[key](raw, f"{source}: {key}")
    for key, parse in RUN_SETTINGS.items():
        if env_name(key) in env:
            values[key] = parse(env[env_name(key)], env_name(key))
    for key, raw in (flags or {}).items():
        if raw is not None:
            values[key] = RUN_SETTINGS[key](raw, "--" + key.replace("_", "-"))
    settings = replace(RunSettings(), **values)
    if not settings.repo:
        raise InputError("--repo: the inventory repository (a URL or a path) is required")
    service.setdefault("data_dir", settings.data_dir / "service")
    return replace(settings, service=finalize(replace(ServiceSettings(), **service)))


def resolve_webhook_secret(settings: RunSettings, env: Mapping[str, str] | None = None,
                           ) -> bytes | None:
    """The webhook's secret, read at start from its reference (like a BMC's credentials,
    :mod:`reconciler.adapters.secrets`): ``RECONCILER_CRED_<REF>`` holding the secret, else the
    file ``<secrets_dir>/<ref>`` (its trailing newline dropped). None when no webhook is
    configured. An empty or blank secret is an error: it would let anyone start fetches."""
    from reconciler.adapters import secrets
    from reconciler.log import register_secret

    ref = settings.webhook_secret
    if not ref:
        return None
    text, source = secrets.lookup(ref, directory=settings.secrets_dir, env=env,
                                  setting="webhook_secret", form="SECRET", error=InputError)
    text = text.rstrip("\r\n")
    if not text.strip():
        raise InputError(f"webhook_secret: {source} is empty",
                         hint="an empty secret would let anyone start a fetch")
    register_secret(text)
    return text.encode("utf-8")
