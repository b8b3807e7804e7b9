"""Build requests: validation of a JSON-decoded body and its content-addressed id.

The schemas are the seed's ``BuildRequest``, ``File`` and ``DirOverride``. Every refusal is an
:class:`~reconciler.errors.InputError` whose message starts with the field path as a client
writes it (``files[3].mode: '0abc' is not an octal mode``), so the HTTP API can return it as
is and the CLI can print it as one line.

Beyond the schema's types, overlay paths must be absolute and normal (no ``.``/``..``
components, no empty components, no trailing ``/``, not ``/`` itself, no NUL), no path may be
given twice, nothing may sit below a symlink or a regular file, and modes are octal strings up
to ``07777``. Unknown properties are ignored, as JSON Schema without
``additionalProperties: false`` allows.

``build_id`` hashes a normalized form (see :func:`normalized`): defaults filled in, modes
as four octal digits, files and dirOverrides sorted by path, canonical JSON (sorted keys, no
whitespace, UTF-8). Two requests that build the same bytes get the same id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.errors import InputError

ARCHITECTURES: tuple[str, ...] = ("amd64", "arm64")

DEFAULT_FILE_MODE = 0o644
DEFAULT_SYMLINK_MODE = 0o777
DEFAULT_DIR_MODE = 0o755
MAX_MODE = 0o7777
# newc stores uid/gid in 8 hex digits.
MAX_ID = 0xFFFFFFFF
# COMMAND_LINE_SIZE is 2048 on x86 and arm64, terminating NUL included.
MAX_CMDLINE = 2047

_OCTAL = re.compile(r"[0-7]{1,5}")


@dataclass(frozen=True, slots=True)
class OverlayFile:
    """A regular file (``content``) or a symlink (``link_target``) in the overlay."""

    path: str
    content: bytes | None
    link_target: str | None
    mode: int
    uid: int
    gid: int
    dir_mode: int
    dir_uid: int
    dir_gid: int

    @property
    def is_symlink(self) -> bool:
        return self.link_target is not None


@dataclass(frozen=True, slots=True)
class DirOverride:
    path: str
    mode: int
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class BuildRequest:
    kernel: str
    initramfs: str
    cmdline: str
    architecture: str
    files: tuple[OverlayFile, ...] = ()
    dir_overrides: tuple[DirOverride, ...] = ()
    tls_artifacts: bool = False


# --- field readers: each takes the raw object and the field path for messages ---------------


def _obj(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InputError(f"{where}: expected an object, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _prefix(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _string(obj: Mapping[str, Any], key: str, where: str, *, required: bool) -> str | None:
    field = _prefix(where, key)
    if key not in obj:
        if required:
            raise InputError(f"{field}: required")
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise InputError(f"{field}: expected a string, got {_kind(value)}")
    if "\0" in value:
        raise InputError(f"{field}: contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800") decodes from JSON but has no UTF-8 form: refuse it here
        # rather than fail later in canonical_json.
        raise InputError(f"{field}: contains an unpaired surrogate character") from None
    return value


def _integer(obj: Mapping[str, Any], key: str, where: str, default: int) -> int:
    field = _prefix(where, key)
    if key not in obj:
        return default
    value = obj[key]
    # JSON Schema: true/false are not integers; 1.0 is.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{field}: expected an integer, got {_kind(value)}")
    if not 0 <= value <= MAX_ID:
        raise InputError(f"{field}: {value} is out of range 0..{MAX_ID}")
    return value


def _mode(obj: Mapping[str, Any], key: str, where: str, default: int) -> int:
    text = _string(obj, key, where, required=False)
    if text is None:
        return default
    field = _prefix(where, key)
    if not _OCTAL.fullmatch(text):
        raise InputError(f"{field}: {text!r} is not an octal mode")
    mode = int(text, 8)
    if mode > MAX_MODE:
        raise InputError(f"{field}: {text!r} exceeds 07777")
    return mode


def _name(obj: Mapping[str, Any], key: str) -> str:
    value = _string(obj, key, "", required=True)
    assert value is not None
    if not value or "/" in value or value in (".", ".."):
        raise InputError(f"{key}: {value!r} is not a plain artifact name (no '/')")
    return value


def check_path(path: str, field: str) -> str:
    """Refuse anything but an absolute, normal path below ``/``."""
    if not path:
        raise InputError(f"{field}: empty path")
    if not path.startswith("/"):
        raise InputError(f"{field}: {path!r} is not absolute")
    if path == "/":
        raise InputError(f"{field}: '/' itself cannot be an overlay entry")
    parts = path[1:].split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InputError(f"{field}: {path!r} is not a normal path (empty, '.' or '..' component)")
    return path


_ASCII_SPACE = str.maketrans("", "", " \t\n\r\f\v")


def _content(obj: Mapping[str, Any], where: str) -> bytes | None:
    text = _string(obj, "contentBase64", where, required=False)
    if text is None:
        return None
    # Line-wrapped base64 (the `base64` tool wraps at 76) is fine; anything else is not.
    # Only ASCII whitespace: str.split() would also drop \x1c or \u2028.
    compact = text.translate(_ASCII_SPACE)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{where}.contentBase64: invalid base64") from None


def _file(raw: object, where: str) -> OverlayFile:
    obj = _obj(raw, where)
    path = _string(obj, "path", where, required=True)
    assert path is not None
    check_path(path, f"{where}.path")
    link_target = _string(obj, "linkTarget", where, required=False)
    if link_target is not None and not link_target:
        raise InputError(f"{where}.linkTarget: empty")
    content = _content(obj, where)
    if link_target is None and content is None:
        raise InputError(f"{where}: regular file {path!r} has no contentBase64 (or linkTarget)")
    if link_target is not None:
        content = None  # the schema: contentBase64 is ignored for symlinks
    default_mode = DEFAULT_SYMLINK_MODE if link_target is not None else DEFAULT_FILE_MODE
    return OverlayFile(
        path=path,
        content=content,
        link_target=link_target,
        mode=_mode(obj, "mode", where, default_mode),
        uid=_integer(obj, "uid", where, 0),
        gid=_integer(obj, "gid", where, 0),
        dir_mode=_mode(obj, "dirMode", where, DEFAULT_DIR_MODE),
        dir_uid=_integer(obj, "dirUid", where, 0),
        dir_gid=_integer(obj, "dirGid", where, 0),
    )


def _dir_override(raw: object, where: str) -> DirOverride:
    obj = _obj(raw, where)
    path = _string(obj, "path", where, required=True)
    assert path is not None
    check_path(path, f"{where}.path")
    return DirOverride(
        path=path,
        mode=_mode(obj, "mode", where, DEFAULT_DIR_MODE),
        uid=_integer(obj, "uid", where, 0),
        gid=_integer(obj, "gid", where, 0),
    )


def _array(obj: Mapping[str, Any], key: str) -> list[object]:
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise InputError(f"{key}: expected an array, got {_kind(value)}")
    return value


def _check_tree(files: tuple[OverlayFile, ...], dirs: tuple[DirOverride, ...]) -> None:
    """No duplicates; nothing below a file or symlink; no directory where a file is."""
    leaves: dict[str, str] = {}
    for i, f in enumerate(files):
        field = f"files[{i}].path"
        if f.path in leaves:
            raise InputError(f"{field}: {f.path!r} is given twice (also {leaves[f.path]})")
        leaves[f.path] = field
    seen_dirs: dict[str, str] = {}
    for i, d in enumerate(dirs):
        field = f"dirOverrides[{i}].path"
        if d.path in seen_dirs:
            raise InputError(f"{field}: {d.path!r} is given twice (also {seen_dirs[d.path]})")
        if d.path in leaves:
            raise InputError(f"{field}: {d.path!r} is also a file ({leaves[d.path]})")
        seen_dirs[d.path] = field
    entries = [(f"files[{i}].path", f.path) for i, f in enumerate(files)]
    entries += [(f"dirOverrides[{i}].path", d.path) for i, d in enumerate(dirs)]
    for field, path in entries:
        parent = path.rsplit("/", 1)[0]
        while parent:
            if parent in leaves:
                kind = "symlink" if _by_path(files, parent).is_symlink else "regular file"
                raise InputError(
                    f"{field}: {path!r} is below the {kind} {parent!r} ({leaves[parent]})"
                )
            parent = parent.rsplit("/", 1)[0]


def _by_path(files: tuple[OverlayFile, ...], path: str) -> OverlayFile:
    return next(f for f in files if f.path == path)


def parse_build_request(obj: object) -> BuildRequest:
    """Validate a JSON-decoded build request; :class:`InputError` names the first bad field."""
    body = _obj(obj, "request")
    cmdline = _string(body, "cmdline", "", required=True)
    assert cmdline is not None
    if len(cmdline.encode()) > MAX_CMDLINE:
        raise InputError(f"cmdline: longer than the kernel's {MAX_CMDLINE} bytes")
    arch = _string(body, "architecture", "", required=True)
    if arch not in ARCHITECTURES:
        raise InputError(f"architecture: {arch!r} is not one of {', '.join(ARCHITECTURES)}")
    tls = body.get("tlsArtifacts", False)
    if not isinstance(tls, bool):
        raise InputError(f"tlsArtifacts: expected a boolean, got {_kind(tls)}")
    files = tuple(_file(raw, f"files[{i}]") for i, raw in enumerate(_array(body, "files")))
    dirs = tuple(
        _dir_override(raw, f"dirOverrides[{i}]")
        for i, raw in enumerate(_array(body, "dirOverrides"))
    )
    _check_tree(files, dirs)
    return BuildRequest(
        kernel=_name(body, "kernel"),
        initramfs=_name(body, "initramfs"),
        cmdline=cmdline,
        architecture=arch,
        files=files,
        dir_overrides=dirs,
        tls_artifacts=tls,
    )


def _mode_text(mode: int) -> str:
    return f"{mode:04o}"


def normalized(req: BuildRequest) -> dict[str, Any]:
    """The request with every default filled in and lists sorted by path (what ``build_id`` hashes).

    Regular files carry their content as canonical base64 (no line breaks); symlinks carry
    no content. Keys use the API's spelling.
    """
    files: list[dict[str, Any]] = []
    for f in sorted(req.files, key=lambda f: f.path):
        entry: dict[str, Any] = {
            "path": f.path,
            "mode": _mode_text(f.mode),
            "uid": f.uid,
            "gid": f.gid,
            "dirMode": _mode_text(f.dir_mode),
            "dirUid": f.dir_uid,
            "dirGid": f.dir_gid,
        }
        if f.link_target is not None:
            entry["linkTarget"] = f.link_target
        else:
            assert f.content is not None
            entry["contentBase64"] = base64.b64encode(f.content).decode("ascii")
        files.append(entry)
    dirs = [
        {"path": d.path, "mode": _mode_text(d.mode), "uid": d.uid, "gid": d.gid}
        for d in sorted(req.dir_overrides, key=lambda d: d.path)
    ]
    return {
        "kernel": req.kernel,
        "initramfs": req.initramfs,
        "cmdline": req.cmdline,
        "architecture": req.architecture,
        "files": files,
        "dirOverrides": dirs,
        "tlsArtifacts": req.tls_artifacts,
    }


def canonical_json(req: BuildRequest) -> bytes:
    return json.dumps(
        normalized(req), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def build_id(req: BuildRequest) -> str:
    """sha256 hex of :func:`canonical_json`: the build's content address."""
    return hashlib.sha256(canonical_json(req)).hexdigest()
