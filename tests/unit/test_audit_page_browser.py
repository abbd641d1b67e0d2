"""The run's HTML page in a real browser: Debian's Chromium, headless, opens it from a file (no
server, nothing fetched: the machine's network is closed to it), lays out the fleet table with a
row per host, and paints it (a screenshot beside a blank page's, taken in the same run)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tasks.audit import html

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium as root on a closed network: no sandbox, no background connections."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    return subprocess.run(
        [str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=180, check=True
    )


def test_the_page_opens_in_headless_chromium_with_the_fleet_table(fleet, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(html.render(fleet))
    dom = chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    fleet_table = re.search(r'<table class="fleet">.*?</table>', dom, re.S)
    assert fleet_table, dom[:2000]
    hosts = re.findall(r'<tr class="host"[^>]*>.*?<a [^>]*>([^<]+)</a>', fleet_table.group(0), re.S)
    assert hosts == ["mx1", "mx2"], fleet_table.group(0)[:2000]

    blank = tmp_path / "blank.html"
    blank.write_text("<!doctype html><title>blank</title>")
    shots = {}
    for name, source in (("page", page), ("blank", blank)):
        shot = tmp_path / f"{name}.png"
        chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1000", source.as_uri())
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        shots[name] = shot.stat().st_size
    # A painted table, charts and colours compress far worse than an empty white page.
    assert shots["page"] > 5 * shots["blank"], shots
