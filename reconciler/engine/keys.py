"""SSH trust: the reconciler's own key pair, and the host keys it bakes into each boot image
and each installed OS and then pins.

The key pair lives in ``<data dir>/ssh/id_ed25519`` (0600, created on first run, written to a
temporary name and renamed); only its path is ever named in a message. Host keys are generated
per server and purpose ("ephemeral", "installed") and kept in the state database, so the same
desired state renders the same build request (the same build id) after a restart; a new target
(a changed disk digest) gets new keys. A host that answers with any other key is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh

from reconciler.adapters.ssh import load_key
from reconciler.adapters.statedb import StateDB
from reconciler.adapters.store import write_atomic

KEY_NAME = "id_ed25519"


def reconciler_key(directory: Path) -> tuple[asyncssh.SSHKey, str]:
    """(private key, public line) of the reconciler, created on first use."""
    path = directory / KEY_NAME
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = asyncssh.generate_private_key("ssh-ed25519", comment="reconciler")
        write_atomic(path, key.export_private_key("openssh"))
        os.chmod(path, 0o600)
        write_atomic(path.with_suffix(".pub"), key.export_public_key("openssh"))
    key = load_key(path)
    return key, key.export_public_key("openssh").decode().strip()


def host_keys(db: StateDB, host: str, target: str) -> dict[str, tuple[str, str]]:
    """stage -> (private, public) host keys of ``host`` for ``target`` (made once)."""
    out = {}
    for stage in ("ephemeral", "installed"):
        found = db.host_key(host, stage, target)
        if found is None:
            key = asyncssh.generate_private_key("ssh-ed25519", comment=f"{host}-{stage}")
            found = (key.export_private_key("openssh").decode(),
                     key.export_public_key("openssh").decode().strip())
            db.set_host_key(host, stage, target, *found)
        out[stage] = found
    return out


def public_key(line: str) -> asyncssh.SSHKey:
    return asyncssh.import_public_key(line)
