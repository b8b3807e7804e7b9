"""Conditional and single-range GET/HEAD on a static file, decided as pure data.

Given the method, the request headers and the file's size, mtime and ETag, :func:`decide`
returns the status, the response headers and which bytes to send (RFC 9110, sections 13 and
14). The artifacts route then hands exactly those bytes to the server (sendfile), instead of
letting werkzeug wrap the body in 8 KiB reads (../shared/LAB.md).

- If-None-Match (weak comparison) or, without it, If-Modified-Since -> 304.
- Range applies to GET only, one range of unit ``bytes``; an If-Range that does not match
  (strong ETag comparison, or an HTTP date equal to Last-Modified) turns it off -> 200.
- Syntactically invalid Range headers and multiple ranges are ignored -> 200 with the whole
  file (RFC 9110 14.2: a server MAY ignore Range); BMCs send single ranges.
- A range starting at or past the end -> 416 with ``Content-Range: bytes */size``.
- A suffix range longer than the file means the whole file (206).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from werkzeug.http import http_date, parse_date, parse_etags, parse_range_header


@dataclass(frozen=True, slots=True)
class FileInfo:
    size: int
    mtime: float  # seconds since the epoch
    etag: str  # quoted, strong: '"..."'
    content_type: str


@dataclass(frozen=True, slots=True)
class Decision:
    status: int
    headers: tuple[tuple[str, str], ...]
    start: int = 0
    length: int = 0  # bytes of the file to send as the body


def make_etag(size: int, mtime_ns: int, inode: int) -> str:
    return f'"{inode:x}-{size:x}-{mtime_ns:x}"'


def _not_modified(headers: Mapping[str, str], info: FileInfo) -> bool:
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        etags = parse_etags(if_none_match)
        return etags.contains_weak(info.etag.strip('"'))
    since = parse_date(headers.get("If-Modified-Since"))
    return since is not None and int(info.mtime) <= since.timestamp()


def _if_range_allows(headers: Mapping[str, str], info: FileInfo) -> bool:
    value = headers.get("If-Range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == info.etag  # strong comparison: a weak tag never matches
    date = parse_date(value)
    return date is not None and date.timestamp() == int(info.mtime)


def _range(headers: Mapping[str, str], size: int) -> tuple[int, int] | None | bool:
    """(start, stop) to send, None to ignore the Range header, False when unsatisfiable."""
    parsed = parse_range_header(headers.get("Range"))
    if parsed is None or parsed.units != "bytes" or len(parsed.ranges) != 1:
        return None
    start, end = parsed.ranges[0]
    if start < 0:  # suffix: the last -start bytes
        if size == 0:
            return False
        return max(0, size + start), size
    if start >= size:
        return False
    return start, size if end is None else min(end, size)


def decide(method: str, headers: Mapping[str, str], info: FileInfo) -> Decision:
    common = (
        ("ETag", info.etag),
        ("Last-Modified", http_date(int(info.mtime))),
        ("Accept-Ranges", "bytes"),
    )
    if _not_modified(headers, info):
        return Decision(304, common)
    typed = (*common, ("Content-Type", info.content_type))
    span = _range(headers, info.size) if method == "GET" and "Range" in headers else None
    if span is not None and _if_range_allows(headers, info):
        if span is False:
            return Decision(416, (*common, ("Content-Range", f"bytes */{info.size}")))
        assert isinstance(span, tuple)
        start, stop = span
        content_range = ("Content-Range", f"bytes {start}-{stop - 1}/{info.size}")
        length = stop - start
        return Decision(
            206, (*typed, content_range, ("Content-Length", str(length))), start, length
        )
    return Decision(200, (*typed, ("Content-Length", str(info.size))), 0, info.size)
