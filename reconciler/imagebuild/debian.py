"""Debian plumbing for the image builds: apt sources, debootstrap, commands in a chroot.

Every command goes through :func:`reconciler.adapters.run.run`. Mounts needed inside the
chroot (``/proc``, ``/dev``, the persistent ``.deb`` cache) are made in a private mount
namespace (``unshare --mount``), so they vanish with the command even if the build is killed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.adapters.run import run
from reconciler.errors import InputError, ToolMissing

LOG = logging.getLogger(__name__)

SUITE = "bookworm"

# Debian architecture -> what it is called elsewhere.
ARCHES: dict[str, dict[str, str]] = {
    "amd64": {"uname": "x86_64", "qemu_user": "qemu-x86_64", "console": "ttyS0"},
    "arm64": {"uname": "aarch64", "qemu_user": "qemu-aarch64", "console": "ttyAMA0"},
}

CHROOT_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "DEBIAN_FRONTEND": "noninteractive",
    "DEBCONF_NONINTERACTIVE_SEEN": "true",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
}

# Run argv inside ROOT with /proc, /sys, /dev and the .deb cache mounted, in a private mount
# namespace. Arguments are positional ($1 root, $2 cache, rest argv): nothing is interpolated.
_IN_CHROOT = r"""set -e
root=$1; cache=$2; shift 2
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mkdir -p "$root/var/cache/apt/archives"
mount --bind "$cache" "$root/var/cache/apt/archives"
exec chroot "$root" "$@"
"""


@dataclass(frozen=True, slots=True)
class AptSource:
    """One deb822 stanza (or one-line ``deb`` entry) of the machine's apt sources."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None

    def deb822(self, extra_components: Iterable[str] = ()) -> str:
        components = list(self.components)
        components += [c for c in extra_components if c not in components]
        lines = [
            "Types: deb",
            f"URIs: {self.uri}",
            f"Suites: {' '.join(self.suites)}",
            f"Components: {' '.join(components)}",
        ]
        if self.signed_by:
            lines.append(f"Signed-By: {self.signed_by}")
        return "\n".join(lines) + "\n"


def parse_deb822_sources(text: str) -> list[AptSource]:
    """The ``Types: deb`` stanzas of a ``.sources`` file (``Enabled: no`` ones skipped)."""
    sources: list[AptSource] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            key, sep, value = line.partition(":")
            if sep and not line[0].isspace():
                fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            sources.append(
                AptSource(
                    uri=uri.rstrip("/"),
                    suites=tuple(fields.get("suites", "").split()),
                    components=tuple(fields.get("components", "").split()),
                    signed_by=fields.get("signed-by") or None,
                )
            )
    return sources


def parse_one_line_sources(text: str) -> list[AptSource]:
    """``deb [options] URI SUITE COMPONENT...`` lines of a ``.list`` file."""
    sources: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        words = re.sub(r"\[[^\]]*\]", "", line[4:]).split()
        if len(words) >= 3:
            sources.append(
                AptSource(uri=words[0].rstrip("/"), suites=(words[1],), components=tuple(words[2:]))
            )
    return sources


def machine_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """The Debian sources this machine uses for ``SUITE`` (the builds use the same mirrors)."""
    found: list[AptSource] = []
    files = [etc_apt / "sources.list"]
    if (etc_apt / "sources.list.d").is_dir():
        files += sorted((etc_apt / "sources.list.d").iterdir())
    for path in files:
        if not path.is_file():
            continue
        if path.suffix == ".sources":
            found += parse_deb822_sources(path.read_text())
        elif path.suffix == ".list" or path.name == "sources.list":
            found += parse_one_line_sources(path.read_text())
    debian = [s for s in found if any(suite.startswith(SUITE) for suite in s.suites)]
    if not any(SUITE in s.suites for s in debian):
        raise ToolMissing(
            f"no apt source for Debian {SUITE} in {etc_apt}/sources.list{{,.d}}",
            hint=f"add the Debian {SUITE} mirror the machine uses to its apt sources",
        )
    return debian


def primary_mirror(sources: Sequence[AptSource]) -> str:
    for source in sources:
        if SUITE in source.suites:
            return source.uri
    raise ToolMissing(f"no apt source carries suite {SUITE}")


def read_list(path: Path) -> list[str]:
    """Entries of a list file: one per line, ``#`` comments and blank lines ignored."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from exc
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if " " in line:
            raise InputError(f"{path}:{number}: one entry per line, got {line!r}")
        entries.append(line)
    return entries


def parse_package_stanzas(text: str) -> list[dict[str, str]]:
    """``apt-cache show`` / ``dpkg-query`` style stanzas as dicts (continuation lines joined)."""
    stanzas: list[dict[str, str]] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key is not None:
                fields[key] += "\n" + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip()
            fields[key] = value.strip()
        if fields:
            stanzas.append(fields)
    return stanzas


def first_dependency(depends: str) -> str:
    """The package name of the first alternative of the first ``Depends`` entry."""
    first = depends.split(",")[0].split("|")[0].strip()
    name = first.split()[0] if first else ""
    if not name:
        raise InputError(f"empty Depends field: {depends!r}")
    return name


class Chroot:
    """A Debian root directory built by debootstrap, with a persistent ``.deb`` cache."""

    def __init__(self, root: Path, *, arch: str, deb_cache: Path) -> None:
        self.root = root
        self.arch = arch
        self.deb_cache = deb_cache

    def bootstrap(self, mirror: str, *, timeout: float = 1800) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self.deb_cache.mkdir(parents=True, exist_ok=True)
        run(
            [
                "unshare", "--mount", "--propagation", "private", "--",
                "debootstrap", "--variant=minbase", f"--arch={self.arch}",
                "--components=main,non-free-firmware",
                f"--cache-dir={self.deb_cache.resolve()}",
                SUITE, self.root, mirror,
            ],
            timeout=timeout,
        )

    def configure_apt(self, sources: Sequence[AptSource]) -> None:
        """Same mirrors as the machine, plus non-free-firmware; no recommends, no docs."""
        etc = self.root / "etc"
        (etc / "apt/sources.list").unlink(missing_ok=True)
        text = "\n".join(s.deb822(["non-free-firmware"]) for s in sources)
        write_text(etc / "apt/sources.list.d/debian.sources", text)
        write_text(
            etc / "apt/apt.conf.d/90reconciler",
            'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
            'APT::Sandbox::User "root";\nAcquire::Languages "none";\n'
            # Keep downloaded packages in the bind-mounted cache for the next build.
            'Binary::apt::APT::Keep-Downloaded-Packages "true";\n',
        )
        # Documentation is never read in RAM; skipping it at unpack time is faster than
        # deleting it afterwards. Copyright files stay (licences).
        write_text(
            etc / "dpkg/dpkg.cfg.d/90reconciler-nodoc",
            "path-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\n"
            "path-exclude=/usr/share/man/*\npath-exclude=/usr/share/info/*\n"
            "path-exclude=/usr/share/locale/*\npath-exclude=/usr/share/lintian/*\n",
        )
        # Never start daemons inside the chroot (the machine's PID 1 is not systemd, so
        # invoke-rc.d would otherwise start sshd from the chroot).
        policy = self.root / "usr/sbin/policy-rc.d"
        write_text(policy, "#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        shutil.copyfile("/etc/resolv.conf", etc / "resolv.conf", follow_symlinks=True)

    def run(self, argv: Sequence[str], *, timeout: float = 1800) -> str:
        proc = run(
            ["unshare", "--mount", "--propagation", "private", "--",
             "/bin/sh", "-c", _IN_CHROOT, "sh", os.fspath(self.root.resolve()),
             os.fspath(self.deb_cache.resolve()), *argv],
            timeout=timeout,
            env=CHROOT_ENV,
        )
        return proc.stdout.decode(errors="replace")

    def apt(self, *args: str, timeout: float = 1800) -> str:
        return self.run(["apt-get", "-y", "-q", *args], timeout=timeout)

    def show(self, packages: Sequence[str]) -> list[dict[str, str]]:
        """Candidate versions of ``packages`` (``apt-cache show --no-all-versions``)."""
        out = self.run(["apt-cache", "show", "--no-all-versions", *packages], timeout=120)
        return parse_package_stanzas(out)

    def download(self, packages: Sequence[str]) -> list[tuple[dict[str, str], Path]]:
        """Download the candidate ``.deb`` of each package (no dependencies) into the cache.

        Returns each package's ``apt-cache show`` stanza with the host path of its file.
        """
        stanzas = self.show(packages)
        self.run(
            ["/bin/sh", "-c", 'cd /var/cache/apt/archives && exec "$@"', "sh",
             "apt-get", "-q", "download", *(f"{s['Package']}={s['Version']}" for s in stanzas)],
            timeout=1800,
        )
        found = []
        for stanza in stanzas:
            # apt names downloads name_version_arch.deb with the epoch's ':' as %3a.
            version = stanza["Version"].replace(":", "%3a")
            path = self.deb_cache / f"{stanza['Package']}_{version}_{stanza['Architecture']}.deb"
            if not path.exists():
                raise ToolMissing(f"apt did not download {stanza['Package']} {stanza['Version']}")
            found.append((stanza, path))
        return found

    def installed(self) -> list[dict[str, str]]:
        out = self.run(
            ["dpkg-query", "-W", "-f",
             "Package: ${Package}\nVersion: ${Version}\nArchitecture: ${Architecture}\n"
             "Installed-Size: ${Installed-Size}\nStatus: ${Status}\n\n"],
            timeout=120,
        )
        return [s for s in parse_package_stanzas(out) if s.get("Status", "").endswith(" installed")]


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def extract_deb(deb: Path, dest: Path, *, timeout: float = 600) -> None:
    """Unpack a ``.deb`` without running its maintainer scripts (any architecture)."""
    dest.mkdir(parents=True, exist_ok=True)
    run(["dpkg-deb", "-x", deb, dest], timeout=timeout)
