"""Source patches applied to installed packages, as data: (file, anchor, replacement).

Each patch replaces one exact anchor; a missing anchor fails the build (the package changed,
so the patch must be reviewed), and the patched Python module is recompiled in the chroot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import ToolFailed


@dataclass(frozen=True, slots=True)
class Patch:
    path: str  # relative to the root filesystem
    anchor: str
    replacement: str
    why: str


CLOUD_INIT_ROUTE_DEFAULT = Patch(
    path="usr/lib/python3/dist-packages/cloudinit/net/network_state.py",
    anchor=(
        '    if "destination" in normal_route:\n'
        '        normal_route["network"] = normal_route["destination"]\n'
        '        del normal_route["destination"]\n'
    ),
    replacement=(
        '    if "destination" in normal_route:\n'
        '        normal_route["network"] = normal_route["destination"]\n'
        '        del normal_route["destination"]\n'
        '    # reconciler: netplan v2 "to: default" (cloud-init >= 23.1 accepts it).\n'
        '    if normal_route.get("network") == "default":\n'
        '        gateway = str(normal_route.get("gateway", ""))\n'
        '        normal_route["network"] = "::/0" if ":" in gateway else "0.0.0.0/0"\n'
    ),
    why=(
        "the design's network-config uses routes 'to: default'; bookworm's cloud-init 22.4 "
        "fails the whole network stage with 'Address default is not a valid ip network'"
    ),
)

PATCHES: tuple[Patch, ...] = (CLOUD_INIT_ROUTE_DEFAULT,)


def apply(root: Path, patches: tuple[Patch, ...] = PATCHES) -> list[str]:
    """Apply ``patches`` under ``root``; the patched paths (for recompiling)."""
    done = []
    for patch in patches:
        path = root / patch.path
        text = path.read_text()
        if patch.replacement in text:
            done.append(patch.path)
            continue
        if text.count(patch.anchor) != 1:
            raise ToolFailed(f"patch for {patch.path} no longer applies (anchor not found once)",
                             hint=f"review the patch: {patch.why}")
        path.write_text(text.replace(patch.anchor, patch.replacement))
        done.append(patch.path)
    return done
