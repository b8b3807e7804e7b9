"""The digest of everything an image build reads from the repository (its cache key)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from reconciler.paths import images_dir

_CODE = Path(__file__).resolve().parent


def digest(images: Path | None = None) -> str:
    """sha256 over the paths, modes and bytes of ``images/`` and this build code."""
    h = hashlib.sha256()
    for base, label in ((images or images_dir(), "images"), (_CODE, "imagebuild")):
        for path in sorted(base.rglob("*")):
            if path.is_dir() or "__pycache__" in path.parts:
                continue
            rel = f"{label}/{path.relative_to(base)}"
            mode = "l" if path.is_symlink() else ("x" if path.stat().st_mode & 0o111 else "f")
            data = str(path.readlink()).encode() if path.is_symlink() else path.read_bytes()
            h.update(f"{rel}\0{mode}\0{len(data)}\0".encode())
            h.update(data)
    return h.hexdigest()
