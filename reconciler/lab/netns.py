"""Network namespaces: create one with a bridge, run code or programs inside it, delete it.

Everything goes through ``ip`` (iproute2) via the one subprocess wrapper. Python code reaches
the namespace with :func:`call_in_netns`: a thread enters it with ``setns(2)`` (a network
namespace is per thread), runs the function, and the sockets it opens live in the lab.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from reconciler.adapters.run import run
from reconciler.errors import ToolFailed

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
_IP_TIMEOUT = 30.0


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def exec_prefix(name: str) -> list[str]:
    """argv prefix running a program inside namespace ``name``."""
    return ["ip", "netns", "exec", name]


def create(name: str, *, bridge: str, bridge_mac: str, address: str) -> None:
    """A new namespace holding loopback and a bridge carrying ``address`` (CIDR), both up."""
    run(["ip", "netns", "add", name], timeout=_IP_TIMEOUT)
    ip = ["ip", "-n", name]
    run([*ip, "link", "set", "lo", "up"], timeout=_IP_TIMEOUT)
    run(
        [*ip, "link", "add", bridge, "address", bridge_mac, "type", "bridge",
         "stp_state", "0", "forward_delay", "0"],
        timeout=_IP_TIMEOUT,
    )
    run([*ip, "addr", "add", address, "dev", bridge], timeout=_IP_TIMEOUT)
    run([*ip, "link", "set", bridge, "up"], timeout=_IP_TIMEOUT)


def pids(name: str) -> list[int]:
    """Every process whose network namespace is ``name``."""
    if not exists(name):
        return []
    out = run(["ip", "netns", "pids", name], timeout=_IP_TIMEOUT, check=False).stdout
    return [int(p) for p in out.decode().split() if p.isdigit()]


def delete(name: str) -> None:
    if exists(name):
        run(["ip", "netns", "del", name], timeout=_IP_TIMEOUT)


_libc = ctypes.CDLL(None, use_errno=True)


def _enter(name: str) -> None:
    fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise ToolFailed(f"setns into network namespace {name} failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def call_in_netns(name: str, func: Callable[[], T]) -> T:
    """Run ``func`` in a thread that entered network namespace ``name``; return its result.

    Threads ``func`` starts inherit the namespace; the caller's thread never leaves its own.
    """
    box: dict[str, object] = {}

    def target() -> None:
        try:
            _enter(name)
            box["value"] = func()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        error = box["error"]
        assert isinstance(error, BaseException)
        raise error
    return box["value"]  # type: ignore[return-value]
