"""Choosing kernel modules and the firmware they ask for (pure functions over file data).

The Debian kernel ships ~4,000 modules; the ephemeral OS keeps the storage, NIC, filesystem
and virtio ones listed in ``images/ephemeral/modules.txt`` plus everything they depend on
(``modules.dep``), and only the firmware files those modules name in their ``.modinfo``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping

MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def parse_modules_dep(text: str) -> dict[str, tuple[str, ...]]:
    """``modules.dep`` -> {module path: dependency paths}, paths relative to the version dir."""
    deps: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        module, sep, rest = line.partition(":")
        if sep:
            deps[module.strip()] = tuple(rest.split())
    return deps


def selected(module_paths: Iterable[str], patterns: Iterable[str]) -> set[str]:
    """Module paths (``kernel/drivers/...ko``) under any pattern (a dir or a file stem)."""
    prefixes = [p.strip("/") for p in patterns]
    chosen = set()
    for path in module_paths:
        rel = path.removeprefix("kernel/")
        stem = rel
        for suffix in MODULE_SUFFIXES:
            if rel.endswith(suffix):
                stem = rel[: -len(suffix)]
                break
        for prefix in prefixes:
            bare = prefix.removesuffix(".ko")
            if stem == bare or rel.startswith(prefix + "/"):
                chosen.add(path)
                break
    return chosen


def closure(roots: Iterable[str], deps: Mapping[str, tuple[str, ...]]) -> set[str]:
    """``roots`` plus everything they depend on, transitively."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        module = stack.pop()
        if module in seen:
            continue
        seen.add(module)
        stack.extend(deps.get(module, ()))
    return seen


def modinfo_firmware(module_bytes: bytes) -> list[str]:
    """The ``firmware=`` entries of an uncompressed module's ``.modinfo`` strings.

    ``.modinfo`` is a run of NUL-terminated ``key=value`` strings; scanning the whole file for
    NUL-prefixed ``firmware=`` finds them without an ELF parser (module code never contains
    that byte sequence followed by a printable name and NUL in practice, and a stray match
    only keeps one extra firmware file).
    """
    names = []
    marker = b"\0firmware="
    start = module_bytes.find(marker)
    while start != -1:
        begin = start + len(marker)
        end = module_bytes.find(b"\0", begin)
        if end == -1:
            break
        value = module_bytes[begin:end]
        if value and all(32 < b < 127 for b in value):
            names.append(value.decode())
        start = module_bytes.find(marker, end)
    return names


def match_firmware(requested: Iterable[str], available: Iterable[str]) -> set[str]:
    """Available firmware paths (relative to lib/firmware) that a request names or globs.

    Drivers name files exactly (``bnx2x/bnx2x-e2-7.13.21.0.fw``) or with wildcards
    (``iwlwifi-*``); compressed variants (``.xz``, ``.zst``) count as the same file.
    """
    available = list(available)
    by_plain: dict[str, list[str]] = {}
    for path in available:
        plain = path.removesuffix(".xz").removesuffix(".zst")
        by_plain.setdefault(plain, []).append(path)
    chosen: set[str] = set()
    for name in requested:
        if any(ch in name for ch in "*?["):
            for plain, paths in by_plain.items():
                if fnmatch.fnmatchcase(plain, name):
                    chosen.update(paths)
        else:
            chosen.update(by_plain.get(name, ()))
    return chosen
