"""The one subprocess wrapper.

argv lists only, ``os.fspath`` for paths, ``+ argv`` logged before running, stdin from
/dev/null unless input is given, an explicit environment, a mandatory timeout, and one
failure message carrying the exit code and the tail of stderr (mkosi ``run.py``).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reconciler.errors import ToolFailed, ToolMissing
from reconciler.log import redact

LOG = logging.getLogger(__name__)

# The Debian package that provides each program we call; used in "not found" hints.
TOOL_PACKAGES: dict[str, str] = {
    "objcopy": "binutils",
    "aarch64-linux-gnu-objcopy": "binutils-aarch64-linux-gnu",
    "xorriso": "xorriso",
    "grub-mkrescue": "grub-common",
    "grub-mkimage": "grub-common",
    "grub-mkstandalone": "grub-common",
    "mformat": "mtools",
    "mcopy": "mtools",
    "mmd": "mtools",
    "mkfs.vfat": "dosfstools",
    "mkfs.fat": "dosfstools",
    "mkfs.ext4": "e2fsprogs",
    "cpio": "cpio",
    "gzip": "gzip",
    "zstd": "zstd",
    "sgdisk": "gdisk",
    "qemu-img": "qemu-utils",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-system-aarch64": "qemu-system-arm",
    "debootstrap": "debootstrap",
    "dnsmasq": "dnsmasq-base",
    "ip": "iproute2",
    "sbsign": "sbsigntool",
    "ssh-keygen": "openssh-client",
    "git": "git",
    "openssl": "openssl",
    "curl": "curl",
    "nginx": "nginx-light",
    "libvirtd": "libvirt-daemon-system",
    "virsh": "libvirt-clients",
    "dpkg-deb": "dpkg",
}

_STDERR_TAIL = 800


def which(program: str) -> str:
    """Absolute path of ``program`` or :class:`ToolMissing` naming the package to install."""
    found = shutil.which(program)
    if found is None:
        package = TOOL_PACKAGES.get(program)
        hint = f"install {package}" if package else f"install the package providing {program}"
        raise ToolMissing(f"{program} not found", hint=hint)
    return found


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    input: bytes | None = None,
    check: bool = True,
    capture_stdout: bool = True,
    stdout_path: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` and return the completed process.

    ``env`` is the whole environment of the child (PATH and LANG are kept when not given);
    ``stdout_path`` streams stdout into a file instead of memory.
    """
    args = [os.fspath(a) for a in argv]
    if not args:
        raise ValueError("run() needs a program")
    program = args[0]
    if os.sep not in program:
        args[0] = which(program)
    elif not os.path.exists(program):
        package = TOOL_PACKAGES.get(Path(program).name, "it")
        raise ToolMissing(f"{program} not found", hint=f"install {package}")
    child_env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8"}
    if env is not None:
        child_env.update(env)
    LOG.debug("+ %s", redact(shlex.join(args)))
    stdout: Any
    out_file = None
    try:
        if stdout_path is not None:
            out_file = open(stdout_path, "wb")  # noqa: SIM115 - closed in finally
            stdout = out_file
        else:
            stdout = subprocess.PIPE if capture_stdout else subprocess.DEVNULL
        proc = subprocess.run(
            args,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=child_env,
            cwd=os.fspath(cwd) if cwd is not None else None,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ToolFailed(
            f"{Path(program).name} timed out after {timeout:g} s: {redact(shlex.join(args))}"
        ) from exc
    finally:
        if out_file is not None:
            out_file.close()
    if check and proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip()[-_STDERR_TAIL:]
        raise ToolFailed(
            f"{Path(program).name} failed with exit status {proc.returncode}: "
            f"{redact(shlex.join(args))}" + (f": {redact(tail)}" if tail else "")
        )
    return proc
