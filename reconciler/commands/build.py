"""``reconciler build``: one UKI and one ISO from a kernel, a base initramfs and an overlay.

    reconciler build --arch amd64 --kernel vmlinuz --initramfs initrd.img \\
        --cmdline 'console=ttyS0' --file /etc/motd=motd.txt:0644 \\
        --symlink /usr/local/bin/python=/usr/bin/python3 --dir-override /root:0700 --out out/

The flags become a build request (the same one the build service accepts) and go through
the same validation and the same pipeline, so a request's error names its field and the flag
it came from: ``files[0].mode: '0abc' is not an octal mode (--file /etc/motd=motd.txt:0abc)``.
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path
from typing import Any

from reconciler.artifacts.pipeline import build_artifacts
from reconciler.artifacts.request import ARCHITECTURES, build_id, parse_build_request
from reconciler.errors import InputError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "build",
        help="build a UKI and a bootable ISO with a per-server overlay",
        description="Write uki.efi and boot.iso into --out.",
    )
    p.add_argument("--arch", required=True, help="amd64 or arm64")
    p.add_argument("--kernel", required=True, type=Path, help="EFI-stub kernel image (PE)")
    p.add_argument("--initramfs", required=True, type=Path, help="base initramfs")
    p.add_argument("--cmdline", required=True, help="kernel command line (.cmdline)")
    p.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="DEST=SRC[:MODE]",
        help="add the local file SRC as DEST (octal MODE, default 0644); repeatable",
    )
    p.add_argument(
        "--symlink",
        action="append",
        default=[],
        metavar="DEST=TARGET",
        help="add a symlink DEST -> TARGET; repeatable",
    )
    p.add_argument(
        "--dir-override",
        action="append",
        default=[],
        metavar="PATH[:MODE]",
        help="give directory PATH this octal mode (default 0755, owner root); repeatable",
    )
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.set_defaults(func=handler)


def _split(text: str, sep: str, flag: str, form: str) -> tuple[str, str]:
    left, found, right = text.partition(sep)
    if not found or not left or not right:
        raise InputError(f"{flag} {text}: expected {form}")
    return left, right


def _file_entry(text: str) -> dict[str, Any]:
    dest, rest = _split(text, "=", "--file", "DEST=SRC[:MODE]")
    src, mode = rest, None
    head, sep, tail = rest.rpartition(":")
    if sep and head and "/" not in tail:  # a trailing ":MODE"; SRC itself may contain ':'
        src, mode = head, tail
    path = Path(src)
    if not path.is_file():
        raise InputError(f"--file {text}: {src} does not exist or is not a file")
    entry: dict[str, Any] = {
        "path": dest,
        "contentBase64": base64.b64encode(path.read_bytes()).decode("ascii"),
    }
    if mode is not None:
        entry["mode"] = mode
    return entry


def _dir_entry(text: str) -> dict[str, Any]:
    path, sep, mode = text.rpartition(":")
    if not sep:
        return {"path": text}
    return {"path": path, "mode": mode}


def request_from_args(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """The JSON request body for the flags, and which flag each list entry came from."""
    if args.arch not in ARCHITECTURES:
        raise InputError(f"--arch: {args.arch!r} is not one of {', '.join(ARCHITECTURES)}")
    for flag, path in (("--kernel", args.kernel), ("--initramfs", args.initramfs)):
        if not path.is_file():
            raise InputError(f"{flag}: {path} does not exist or is not a file")
    origin: dict[str, str] = {}
    files: list[dict[str, Any]] = []
    for text in args.file:
        origin[f"files[{len(files)}]"] = f"--file {text}"
        files.append(_file_entry(text))
    for text in args.symlink:
        origin[f"files[{len(files)}]"] = f"--symlink {text}"
        dest, target = _split(text, "=", "--symlink", "DEST=TARGET")
        files.append({"path": dest, "linkTarget": target})
    dirs: list[dict[str, Any]] = []
    for text in args.dir_override:
        origin[f"dirOverrides[{len(dirs)}]"] = f"--dir-override {text}"
        dirs.append(_dir_entry(text))
    body = {
        "kernel": args.kernel.name,
        "initramfs": args.initramfs.name,
        "cmdline": args.cmdline,
        "architecture": args.arch,
        "files": files,
        "dirOverrides": dirs,
    }
    return body, origin


def handler(args: argparse.Namespace) -> int:
    body, origin = request_from_args(args)
    try:
        req = parse_build_request(body)
    except InputError as exc:
        field = exc.message.split(":", 1)[0].split(".", 1)[0]
        if field in origin:
            raise InputError(f"{exc.message} ({origin[field]})", hint=exc.hint) from None
        raise
    built = build_artifacts(req, kernel=args.kernel, initramfs=args.initramfs, out_dir=args.out)
    print(f"build {build_id(req)}")
    print(f"uki {built.uki}")
    print(f"iso {built.iso}")
    return 0
