"""The lab as the product's own use: an inventory repository and ``reconciler run`` on it.

``lab up --images DIR`` (unless ``--service-only``):

1. publishes the lab's target image (built by ``images/``) on the build service, under
   ``<lab>/published/`` served as ``/images/<name>``, with its real sha256;
2. creates the lab inventory as a bare git repository ``<lab>/inventory.git``: the example
   inventory with that URL and digest filled in, one commit on ``main``;
3. writes ``<lab>/run.yaml`` and starts ``reconciler run`` in the lab's network namespace with
   data directory ``<lab>/reconciler``; its embedded build service listens on the gateway
   address (the BMC emulator and the VMs fetch from it).

An operator then clones ``inventory.git``, edits, pushes, and the loop converges the lab.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from reconciler.adapters.run import run
from reconciler.errors import InputError
from reconciler.lab.spec import GATEWAY, SERVICE_PORT, SERVICE_URL, LabPaths
from reconciler.paths import example_inventory

INVENTORY_REPO = "inventory.git"
RECONCILER_DATA = "reconciler"
PUBLISHED = "published"
RUN_CONFIG = "run.yaml"
POLL_INTERVAL = 10.0  # the lab has no webhook yet: a push is seen within this

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "reconciler lab", "GIT_AUTHOR_EMAIL": "lab@reconciler.invalid",
    "GIT_COMMITTER_NAME": "reconciler lab", "GIT_COMMITTER_EMAIL": "lab@reconciler.invalid",
    "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1",
}


def inventory_repo(paths: LabPaths) -> Path:
    return paths.root / INVENTORY_REPO


def reconciler_data(paths: LabPaths) -> Path:
    return paths.root / RECONCILER_DATA


def publish_target(paths: LabPaths, images_dir: Path, arch: str) -> tuple[str, str]:
    """Publish the cached target image; (its URL on the service, its sha256)."""
    from reconciler.imagebuild import cache
    from reconciler.web.images import publish

    try:
        images = cache.load(images_dir, arch)
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"--images: {images_dir} has no {arch} target image ({exc})",
                         hint="reconciler images ensure prints the directory") from None
    name = images.target_image.name
    sha256 = publish(images.target_image, paths.root / PUBLISHED, name)
    if sha256 != images.target_sha256:
        raise InputError(f"{images.target_image}: sha256 {sha256} differs from its manifest's "
                         f"{images.target_sha256}")
    return f"{SERVICE_URL}/images/{name}", sha256


def _with_image(profiles: str, url: str, sha256: str) -> str:
    """The example's profiles.yaml with the lab image's URL and digest (text kept as is)."""
    out, n = re.subn(r'(?m)^(\s+url:\s*).*$', lambda m: f"{m.group(1)}{url}", profiles,
                     count=1)
    out, m = re.subn(r'(?m)^(\s+sha256:\s*).*$', lambda g: f'{g.group(1)}"{sha256}"', out,
                     count=1)
    if n != 1 or m != 1:
        raise InputError("inventory-example/profiles.yaml: no image url/sha256 to fill in")
    yaml.safe_load(out)  # still YAML
    return out


def _with_state(server: str, state: str) -> str:
    out, n = re.subn(r"(?m)^state:.*$", f"state: \"{state}\"", server, count=1)
    if n != 1:
        raise InputError("inventory-example: a server file without a top-level state")
    return out


def make_inventory_repo(paths: LabPaths, url: str, sha256: str,
                        states: Mapping[str, str] | None = None) -> Path:
    """A fresh bare repository holding the example inventory with the lab image, on main;
    ``states``: server name -> the state its file starts with instead of the example's."""
    bare = inventory_repo(paths)
    shutil.rmtree(bare, ignore_errors=True)
    run(["git", "init", "-q", "--bare", "-b", "main", bare], timeout=60, env=GIT_IDENTITY)
    with tempfile.TemporaryDirectory(prefix="lab-inventory-") as tmp:
        work = Path(tmp) / "inventory"
        shutil.copytree(example_inventory(), work)
        profiles = work / "profiles.yaml"
        profiles.write_text(_with_image(profiles.read_text(), url, sha256))
        for name, state in (states or {}).items():
            server = work / "servers" / f"{name}.yaml"
            server.write_text(_with_state(server.read_text(), state))
        for argv in (["init", "-q", "-b", "main"], ["add", "-A"],
                     ["commit", "-q", "-m", "lab: the example inventory, with the lab's "
                      "published target image"],
                     ["push", "-q", str(bare), "main"]):
            run(["git", *argv], timeout=60, cwd=work, env=GIT_IDENTITY)
    return bare


def write_run_config(paths: LabPaths, images_dir: Path, secrets_dir: Path) -> Path:
    config = {
        "repo": str(inventory_repo(paths)),
        "branch": "main",
        "data_dir": str(reconciler_data(paths)),
        "secrets_dir": str(secrets_dir),
        "poll_interval": POLL_INTERVAL,
        "observe_interval": 30,
        "graceful_timeout": 30,
        "service": {
            "listen": f"{GATEWAY}:{SERVICE_PORT}",
            "public_url": SERVICE_URL,
            "images": str(images_dir.resolve()),
            "published": str(paths.root / PUBLISHED),
            "data_dir": str(reconciler_data(paths) / "service"),
            # The reconciler reaches its service from inside the lab; VMs and the BMC (the
            # rest of the subnet) get only artifacts, published images and checkin updates.
            "trusted": ["127.0.0.0/8", f"{GATEWAY}/32"],
        },
    }
    path = paths.root / RUN_CONFIG
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def reconciler_argv(config: Path) -> tuple[str, ...]:
    return (sys.executable, "-m", "reconciler", "run", "--config", str(config))


def serve_argv(paths: LabPaths, images: Path) -> tuple[str, ...]:
    """The bare build service (``lab up --service-only``) on the gateway address, serving the
    published target image too."""
    if not images.is_dir():
        raise InputError(f"--images: {images} is not a directory")
    config = paths.root / "serve.yaml"
    config.write_text(yaml.safe_dump({"published": str(paths.root / PUBLISHED)}))
    return (
        sys.executable, "-m", "reconciler", "serve", "--config", str(config),
        "--listen", f"{GATEWAY}:{SERVICE_PORT}",
        "--images", str(images.resolve()),
        "--data-dir", str(paths.root / "service"),
        "--public-url", SERVICE_URL,
        # Lab tools reach the service from inside the lab, from the gateway address; VMs and
        # the BMC (the rest of the subnet) get only artifacts, images and checkin updates.
        "--trusted", "127.0.0.0/8",
        "--trusted", f"{GATEWAY}/32",
    )


def inventory_files(paths: LabPaths) -> dict[str, bytes]:
    """The lab inventory's files on ``main`` (what ``lab boot`` provisions from)."""
    from reconciler.adapters.git import GitInventory

    return dict(GitInventory(inventory_repo(paths), prefix="").snapshot("main").files)
