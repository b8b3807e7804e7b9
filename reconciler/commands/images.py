"""``reconciler images``: build the base artifacts and the lab target image.

    reconciler images build  --arch amd64 --out DIR     # DIR/amd64/{vmlinuz,initramfs}-amd64*
    reconciler images target --arch amd64 --out DIR     # DIR/amd64/debian-12-amd64.qcow2
    reconciler images show   --arch amd64 --out DIR     # summary of DIR/amd64/manifest.json
    reconciler images ensure --arch amd64               # both, cached by input digest; prints DIR

``DIR`` is what ``reconciler serve --images DIR`` reads. Packages come from this machine's
apt sources; the ``.deb`` files are kept in ``--cache`` so a rebuild downloads nothing new.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from reconciler.imagebuild import cache, debian, ephemeral, target
from reconciler.imagebuild.manifest import read_manifest
from reconciler.paths import project_root

LOG = logging.getLogger(__name__)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", required=True, choices=sorted(debian.ARCHES),
                        help="Debian architecture to build for")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="output directory; files land in DIR/<arch>/")


def _work(parser: argparse.ArgumentParser) -> None:
    default = project_root() / "build" / "images"
    parser.add_argument("--work", type=Path, default=default / "work", metavar="DIR",
                        help="scratch directory for the root filesystems (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=default / "debs", metavar="DIR",
                        help="persistent .deb cache (default: %(default)s)")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("images", help="build the ephemeral OS and the lab target image")
    sub = parser.add_subparsers(dest="images_command", metavar="ACTION", required=True)

    build = sub.add_parser("build", help="build vmlinuz-<arch>, initramfs-<arch>.img, manifest")
    _common(build)
    _work(build)
    build.add_argument("--compression", choices=sorted(ephemeral.COMPRESSORS), default="zstd",
                       help="compression of initramfs-<arch>.img (default: %(default)s)")
    build.add_argument("--no-measure", action="store_true",
                       help="skip compressing a second time only to report the other size")
    build.set_defaults(func=_build)

    tgt = sub.add_parser("target", help="build the lab's UEFI Debian qcow2 target image")
    _common(tgt)
    _work(tgt)
    tgt.set_defaults(func=_target)

    ensure = sub.add_parser(
        "ensure", help="build both once per digest of their inputs (cached); print the DIR"
    )
    ensure.add_argument("--arch", choices=sorted(debian.ARCHES), default=cache.DEFAULT_ARCH,
                        help="Debian architecture (default: %(default)s)")
    ensure.add_argument("--cache", type=Path, default=None, metavar="DIR",
                        help="cache root (default: $RECONCILER_IMAGE_CACHE or build/images)")
    ensure.set_defaults(func=_ensure)

    show = sub.add_parser("show", help="summarise DIR/<arch>/manifest.json")
    _common(show)
    show.set_defaults(func=_show)


def _build(args: argparse.Namespace) -> int:
    manifest = ephemeral.build(
        args.arch, args.out, work_dir=args.work, deb_cache=args.cache,
        compression=args.compression, measure_other=not args.no_measure,
    )  # fmt: skip
    print(summary(read_manifest(manifest)))
    return 0


def _target(args: argparse.Namespace) -> int:
    image = target.build(args.arch, args.out, work_dir=args.work, deb_cache=args.cache)
    data = read_manifest(image.with_name(f"debian-12-{args.arch}.manifest.json"))
    print(f"{image}: {data['image']['size'] / 2**20:.1f} MiB qcow2, sha256 "
          f"{data['image']['sha256']}, built in {data['buildSeconds']['total']:.0f} s")
    return 0


def _ensure(args: argparse.Namespace) -> int:
    built = cache.ensure(args.arch, args.cache)
    print(built.images_dir)
    return 0


def _show(args: argparse.Namespace) -> int:
    print(summary(read_manifest(args.out / args.arch / "manifest.json")))
    return 0


def summary(manifest: dict[str, Any]) -> str:
    """A few lines for humans: files, sizes, packages, timings."""
    kernel, initramfs = manifest["kernel"], manifest["initramfs"]
    sizes = ", ".join(f"{k} {v / 2**20:.1f} MiB"
                      for k, v in sorted(initramfs["compressedSizes"].items()))
    lines = [
        f"{manifest['architecture']}: {kernel['file']} ({kernel['package']} {kernel['version']},"
        f" {kernel['size'] / 2**20:.1f} MiB)",
        f"  {initramfs['file']}: {initramfs['compression']}, {initramfs['size'] / 2**20:.1f} MiB"
        f" ({initramfs['uncompressedSize'] / 2**20:.0f} MiB in RAM; {sizes})",
        f"  {len(manifest['packages'])} packages, {manifest['modules']['kept']} of "
        f"{manifest['modules']['total']} modules, {manifest['firmwareFiles']} firmware files",
        "  build seconds: " + json.dumps(manifest["buildSeconds"], sort_keys=True),
    ]
    return "\n".join(lines)
