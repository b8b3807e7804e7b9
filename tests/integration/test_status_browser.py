"""The status page in a real browser: Debian's chromium, headless, renders it from the real
service (``reconciler.web.services.start`` with a FleetLink, cheroot on a loopback port) beside
the real engine holding a fleet in every condition (tests/fixtures/fleet_world.py).

The DOM chromium built is checked, with JavaScript on and off: the Stalled server's message is
shown, the counts are those ``reconciler status --json`` prints, the hostile commit subject is
text and no script element exists. The screenshot is kept as a CI artifact:
``${CI_ARTIFACTS:-build/ci-artifacts}/status-page.png`` (docs/status.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from reconciler.engine import brake
from tests.fixtures.chromium import NO_SCRIPT, chromium, devtools, run
from tests.fixtures.fleet_world import SUBJECT, fleet_in_every_condition, fleet_service

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REASON = "disk firmware <b>rollout</b>"


def artifacts_dir() -> Path:
    path = Path(os.environ.get("CI_ARTIFACTS") or REPO / "build" / "ci-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Dom(HTMLParser):
    """The text of every element with an id, every start tag's name, the rows' data."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.by_id: dict[str, str] = {}
        self.rows: dict[str, str] = {}  # data-host -> the row's text
        self.text: list[str] = []
        self.refresh: str | None = None  # <meta http-equiv="refresh" content=...>
        self._open: list[tuple[str, str | None, str | None, int]] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if tag == "meta" and values.get("http-equiv") == "refresh":
            self.refresh = values.get("content")
        if tag in ("meta", "br", "img", "link", "input"):
            return
        self._open.append((tag, values.get("id"), values.get("data-host"), len(self.text)))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            name, ident, host, at = self._open.pop()
            content = " ".join("".join(self.text[at:]).split())
            if ident:
                self.by_id[ident] = content
            if host:
                self.rows[host] = content
            if name == tag:
                break

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return " ".join("".join(self.text).split())


def status_json(data_dir: Path) -> dict[str, object]:
    """What `reconciler status --json` prints, from the CLI itself."""
    result = subprocess.run([sys.executable, "-m", "reconciler", "status", "--data-dir",
                             str(data_dir), "--json"], capture_output=True, text=True,
                            timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    record: dict[str, object] = json.loads(result.stdout)
    return record


def check_fleet_page(dom: Dom, record: dict[str, object]) -> None:
    counts = record["counts"]
    assert isinstance(counts, dict)
    shown = {name: int(dom.by_id[f"count-{name}"]) for name in (
        *counts["health"], *counts["sync"], "orphaned", "invalid")}
    assert shown == {**counts["health"], **counts["sync"], "orphaned": counts["orphaned"],
                     "invalid": counts["invalid"]}
    assert counts["health"] == {"Ready": 3, "Reconciling": 1, "Stalled": 1, "Unknown": 2}
    hosts = record["hosts"]
    assert isinstance(hosts, list)
    assert set(dom.rows) == {h["name"] for h in hosts}
    (stalled,) = [h for h in hosts if h["condition"] == "Stalled"]
    message = next(c["message"] for c in stalled["conditions"] if c["type"] == "Stalled")
    assert "wrong machine" in message and message in dom.rows[stalled["name"]]
    assert "writing image: 1536 MiB written" in dom.rows["web-01"]
    assert "timed out" in dom.rows["bmc-01"]  # the BMC error
    assert dom.by_id["subject"] == SUBJECT  # the hostile subject is text ...
    assert "script" not in dom.tags  # ... and no element
    assert "PAUSED" in dom.by_id["paused"] and REASON in dom.by_id["paused"]


SCRIPTED = ('data:text/html,<p id="probe">static</p>'
            '<script>document.getElementById("probe").textContent = "scripted"</script>')


def test_chromium_renders_the_fleet_with_and_without_javascript(tmp_path: Path) -> None:
    chromium()
    with fleet_in_every_condition(tmp_path) as world, fleet_service(tmp_path, world) as url:
        brake.pause(world.data_dir, "cli:operator", REASON)
        record = status_json(world.data_dir)
        # JavaScript on: the command line's DOM dump, from / (redirected to /status).
        dom = Dom(run(f"{url}/", tmp_path, "--dump-dom"))
        assert dom.refresh == "10"
        check_fleet_page(dom, record)
        # JavaScript off, proven off on a page whose script would change it.
        with devtools(tmp_path, NO_SCRIPT) as browser:
            assert Dom(browser.dom(SCRIPTED)).by_id["probe"] == "static"
            dom = Dom(browser.dom(f"{url}/"))
            assert dom.refresh == "10"
            check_fleet_page(dom, record)
            # A filter is a link: the Stalled rows only, the counts still the fleet's.
            dom = Dom(browser.dom(f"{url}/status?condition=Stalled&refresh=0"))
            assert list(dom.rows) == ["wrong-01"] and dom.by_id["count-Ready"] == "3"
            assert dom.refresh is None
            # The server's own page: conditions, step history with durations.
            dom = Dom(browser.dom(f"{url}/hosts/web-01?refresh=0"))
            assert "write-image" in dom.by_id["history"] and "running" in dom.by_id["history"]
            assert "find-disk" in dom.by_id["last-operation"]
        assert record == status_json(world.data_dir)  # the state did not move meanwhile
        shot = artifacts_dir() / "status-page.png"
        shot.unlink(missing_ok=True)
        run(f"{url}/status?refresh=0", tmp_path, f"--screenshot={shot}",
            "--window-size=1400,900", "--hide-scrollbars")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
