"""Credentials resolved at run time from outside the inventory repository.

The inventory names a credentials *reference* (``bmc.credentials: r1-bmc``), never a
password. A reference resolves, first match wins, from:

1. the environment: ``RECONCILER_CRED_<REF>`` holding ``username:password``, where ``<REF>``
   is the reference upper-cased with every character outside ``A-Z0-9`` replaced by ``_``
   (``r1-bmc`` -> ``RECONCILER_CRED_R1_BMC``);
2. a file ``<secrets_dir>/<ref>`` holding either ``username:password`` on one line or YAML
   with ``username`` and ``password`` keys. ``secrets_dir`` comes from the service config,
   else ``$RECONCILER_SECRETS_DIR``, else ``/etc/reconciler/secrets``.

Every password read is registered with :func:`reconciler.log.register_secret` so it never
reaches a log line, an error message or a status page.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from reconciler.errors import InputError, PermanentError, ReconcilerError
from reconciler.log import register_secret

DEFAULT_SECRETS_DIR = Path("/etc/reconciler/secrets")
REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str = field(repr=False)


def env_name(ref: str) -> str:
    return "RECONCILER_CRED_" + re.sub(r"[^A-Z0-9]", "_", ref.upper())


def secrets_dir(configured: Path | None = None) -> Path:
    if configured is not None:
        return configured
    from_env = os.environ.get("RECONCILER_SECRETS_DIR")
    return Path(from_env) if from_env else DEFAULT_SECRETS_DIR


def _parse(text: str, source: str) -> Credentials:
    stripped = text.strip()
    if "\n" not in stripped and ":" in stripped and not stripped.startswith(("{", "username")):
        username, _, password = stripped.partition(":")
    else:
        try:
            data = yaml.safe_load(stripped)
        except yaml.YAMLError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("username"), str) or not (
            isinstance(data.get("password"), str)
        ):
            raise PermanentError(
                f"{source}: expected 'username:password' or YAML with username and password"
            )
        username, password = data["username"], data["password"]
    if not username or not password:
        raise PermanentError(f"{source}: username and password must both be non-empty")
    register_secret(password)
    return Credentials(username=username, password=password)


def lookup(ref: str, *, directory: Path | None = None, env: Mapping[str, str] | None = None,
           setting: str = "", form: str = "username:password",
           error: type[ReconcilerError] = PermanentError) -> tuple[str, str]:
    """The text a reference names and where it was found (the environment variable, else the
    file in the secrets directory); a missing or unreadable one raises ``error`` naming the
    reference and ``setting`` (never the secret). ``form``: what the hint says to write."""
    prefix = f"{setting}: " if setting else ""
    if not REFERENCE.match(ref):
        raise InputError(f"{prefix}credentials reference {ref!r} is not a valid name",
                         hint="use letters, digits, '.', '_' and '-'")
    env = os.environ if env is None else env
    name = env_name(ref)
    if name in env:
        return env[name], f"environment variable {name}"
    path = secrets_dir(directory) / ref
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        raise error(f"{prefix}credentials {ref!r} not found",
                    hint=f"set {name}={form} or create {path}") from None
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise error(f"{prefix}credentials {ref!r}: cannot read {path}: {reason}") from None


def resolve(ref: str, *, directory: Path | None = None) -> Credentials:
    """Resolve a credentials reference, or raise an error that names it (never the secret)."""
    return _parse(*lookup(ref, directory=directory))
