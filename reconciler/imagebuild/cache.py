"""Build the base artifacts and the lab target image once per digest of their inputs.

``<root>/<digest>/<arch>/`` holds ``vmlinuz-<arch>``, ``initramfs-<arch>.img``, the manifest
and the target qcow2; ``<root>/<digest>`` is the ``--images DIR`` of the build service. Only a
change to ``images/`` or ``reconciler/imagebuild/`` pays for a rebuild. A file lock serialises
concurrent callers on one machine (a test session and a quick start, say).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import PermanentError
from reconciler.imagebuild import ephemeral, inputs, target
from reconciler.paths import project_root

DEFAULT_ARCH = "amd64"


@dataclass(frozen=True)
class BaseImages:
    images_dir: Path  # DIR/<arch>/<name>, the build service's --images layout
    arch: str
    kernel: Path
    initramfs: Path
    manifest: dict[str, object]
    target_image: Path
    target_sha256: str


def cache_root() -> Path:
    return Path(os.environ.get("RECONCILER_IMAGE_CACHE", project_root() / "build" / "images"))


def ensure(arch: str = DEFAULT_ARCH, root: Path | None = None) -> BaseImages:
    """Build (or reuse) the base artifacts and target image for the current inputs.

    ``RECONCILER_BASE_IMAGES=DIR`` uses an existing ``DIR/<arch>/...`` as is (no build).
    """
    given = os.environ.get("RECONCILER_BASE_IMAGES")
    if given:
        return load(Path(given), arch)
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    digest = inputs.digest()[:16]
    out = root / digest
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / arch / ".complete").exists():
            if os.geteuid() != 0:
                raise PermanentError(
                    "building the ephemeral OS needs root", hint="run it as root or with sudo"
                )
            work, debs = root / "work", root / "debs"
            ephemeral.build(arch, out, work_dir=work, deb_cache=debs)
            target.build(arch, out, work_dir=work, deb_cache=debs)
            shutil.rmtree(work / f"ephemeral-{arch}", ignore_errors=True)
            shutil.rmtree(work / f"target-{arch}", ignore_errors=True)
            (out / arch / ".complete").write_text(digest + "\n")
            _prune_old(root, keep=digest)
    return load(out, arch)


def load(out: Path, arch: str) -> BaseImages:
    names = ephemeral.artifact_names(arch)
    arch_dir = out / arch
    target_manifest = json.loads((arch_dir / f"debian-12-{arch}.manifest.json").read_text())
    return BaseImages(
        images_dir=out,
        arch=arch,
        kernel=arch_dir / names["kernel"],
        initramfs=arch_dir / names["initramfs"],
        manifest=json.loads((arch_dir / names["manifest"]).read_text()),
        target_image=arch_dir / target.image_name(arch),
        target_sha256=str(target_manifest["image"]["sha256"]),
    )


def _prune_old(root: Path, keep: str) -> None:
    """Drop builds of older inputs (each is ~250 MB); keep the debs cache and work dir."""
    for entry in root.iterdir():
        if entry.is_dir() and len(entry.name) == 16 and entry.name != keep:
            shutil.rmtree(entry, ignore_errors=True)
