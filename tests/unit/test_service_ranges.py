"""Conditional and range requests on artifacts, decided as pure data (RFC 9110 13, 14)."""

from __future__ import annotations

import pytest
from werkzeug.http import http_date

from reconciler.web.ranges import Decision, FileInfo, decide

INFO = FileInfo(size=1000, mtime=1_700_000_000.5, etag='"abc-3e8-1"', content_type="x/y")
LAST_MODIFIED = http_date(1_700_000_000)


def headers_of(decision: Decision) -> dict[str, str]:
    return dict(decision.headers)


def test_whole_file() -> None:
    d = decide("GET", {}, INFO)
    assert (d.status, d.start, d.length) == (200, 0, 1000)
    h = headers_of(d)
    assert h["Content-Length"] == "1000" and h["Accept-Ranges"] == "bytes"
    assert h["ETag"] == INFO.etag and h["Last-Modified"] == LAST_MODIFIED


@pytest.mark.parametrize(
    ("range_header", "start", "length", "content_range"),
    [
        ("bytes=0-99", 0, 100, "bytes 0-99/1000"),
        ("bytes=900-", 900, 100, "bytes 900-999/1000"),  # open-ended
        ("bytes=990-5000", 990, 10, "bytes 990-999/1000"),  # clipped to the end
        ("bytes=-10", 990, 10, "bytes 990-999/1000"),  # suffix
        ("bytes=-5000", 0, 1000, "bytes 0-999/1000"),  # suffix longer than the file
        ("bytes=999-999", 999, 1, "bytes 999-999/1000"),
    ],
)
def test_single_ranges(range_header: str, start: int, length: int, content_range: str) -> None:
    d = decide("GET", {"Range": range_header}, INFO)
    assert (d.status, d.start, d.length) == (206, start, length)
    assert headers_of(d)["Content-Range"] == content_range
    assert headers_of(d)["Content-Length"] == str(length)


@pytest.mark.parametrize("range_header", ["bytes=1000-", "bytes=5000-6000"])
def test_unsatisfiable(range_header: str) -> None:
    d = decide("GET", {"Range": range_header}, INFO)
    assert d.status == 416 and d.length == 0
    assert headers_of(d)["Content-Range"] == "bytes */1000"


@pytest.mark.parametrize(
    "range_header", ["bytes=0-1,5-6", "bytes=5-2", "items=0-1", "bytes=abc", "bytes=-0", ""]
)
def test_ignored_ranges_give_the_whole_file(range_header: str) -> None:
    assert decide("GET", {"Range": range_header}, INFO).status == 200


def test_head_ignores_range() -> None:
    d = decide("HEAD", {"Range": "bytes=0-9"}, INFO)
    assert d.status == 200 and headers_of(d)["Content-Length"] == "1000"


def test_if_range_matching_etag_or_date_keeps_the_range() -> None:
    for validator in (INFO.etag, LAST_MODIFIED):
        d = decide("GET", {"Range": "bytes=0-9", "If-Range": validator}, INFO)
        assert d.status == 206, validator


@pytest.mark.parametrize(
    "validator", ['"other"', 'W/"abc-3e8-1"', http_date(1_600_000_000), "garbage"]
)
def test_if_range_mismatch_sends_the_whole_file(validator: str) -> None:
    d = decide("GET", {"Range": "bytes=0-9", "If-Range": validator}, INFO)
    assert (d.status, d.length) == (200, 1000)


@pytest.mark.parametrize("tag", [INFO.etag, 'W/"abc-3e8-1"', '"x", "abc-3e8-1"', "*"])
def test_if_none_match_gives_304(tag: str) -> None:
    for method in ("GET", "HEAD"):
        d = decide(method, {"If-None-Match": tag, "Range": "bytes=0-1"}, INFO)
        assert (d.status, d.length) == (304, 0)
        assert headers_of(d)["ETag"] == INFO.etag


def test_if_none_match_other_tag_sends_the_file() -> None:
    assert decide("GET", {"If-None-Match": '"other"'}, INFO).status == 200


def test_if_modified_since() -> None:
    assert decide("GET", {"If-Modified-Since": LAST_MODIFIED}, INFO).status == 304
    older = http_date(1_600_000_000)
    assert decide("GET", {"If-Modified-Since": older}, INFO).status == 200
    # If-None-Match wins over If-Modified-Since.
    both = {"If-Modified-Since": LAST_MODIFIED, "If-None-Match": '"other"'}
    assert decide("GET", both, INFO).status == 200


def test_empty_file() -> None:
    empty = FileInfo(size=0, mtime=1.0, etag='"e"', content_type="x/y")
    assert decide("GET", {}, empty).length == 0
    assert decide("GET", {"Range": "bytes=0-"}, empty).status == 416
    assert decide("GET", {"Range": "bytes=-5"}, empty).status == 416
