"""report.html in a real browser: Debian's chromium, headless, offline, on a file:// URL.

The report is run B (tests/unit/record_fixtures.run_b(): the recorded lab records with
default-deny's 5060/udp/ipv4 opened and allow-proto's 5060/tcp closed) against run A, plus one
unreachable host. --dump-dom gives the DOM after the page's script ran (sorting, ready marker);
--screenshot is decoded with the small PNG reader below and must show both the pass and the fail
colours. The screenshot is kept as report-html.png in the test's tmp dir for a human to look at.
"""

import os
import re
import shutil
import struct
import subprocess
import sys
import zlib

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "unit"))
import record_fixtures as F  # noqa: E402

from ansible_collections.sipguard.firewall.plugins.module_utils.host_record import build_host_record  # noqa: E402
from ansible_collections.sipguard.firewall.plugins.module_utils.report import build_report  # noqa: E402
from ansible_collections.sipguard.firewall.plugins.module_utils.report_render import render_html  # noqa: E402
from ansible_collections.sipguard.firewall.plugins.module_utils.waivers import parse_waivers  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium; `make deps` installs it)")

# The badge colours of report_render.py's CSS: .badge.pass #1e7e34, .badge.fail #c62828, .badge.unreachable
# #b26a00, .badge.waived #5e35b1, .badge.conditional #0277bd
PASS_RGB, FAIL_RGB, UNREACHABLE_RGB = (0x1E, 0x7E, 0x34), (0xC6, 0x28, 0x28), (0xB2, 0x6A, 0x00)
WAIVED_RGB, CONDITIONAL_RGB = (0x5E, 0x35, 0xB1), (0x02, 0x77, 0xBD)
# allow-proto's UDP and TCP waived (it passes, as "waived"); range's waiver expired (it fails)
WAIVERS = [{"id": "trunk-udp", "host": "allow-proto", "port": 5060, "proto": "udp", "owner": "voice-team",
            "reason": "carrier trunk", "expires": "2027-01-31"},
           {"id": "trunk-tcp", "host": "allow-proto", "port": 5060, "proto": "tcp", "owner": "voice-team",
            "reason": "carrier trunk", "expires": "2027-01-31"},
           {"id": "migration", "host": "range", "port": 5060, "proto": "udp", "owner": "ops",
            "reason": "range rule until the migration", "expires": "2026-11-01"},
           {"id": "forgotten", "host": "old-pbx-*", "port": 5060, "proto": "udp", "owner": "ops",
            "reason": "decommissioned", "expires": "2027-06-30"}]


def _chromium(profile, *args):
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--user-data-dir=%s" % profile] + list(args)
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def read_png(path):
    """(width, height, rows of (r, g, b)) of an 8-bit RGB/RGBA non-interlaced PNG, stdlib only."""
    with open(path, "rb") as fh:
        data = fh.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
        pos += 12 + length
    width, height, depth, colour, _comp, _filter, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append([tuple(line[x * channels:x * channels + 3]) for x in range(width)])
        previous = line
    return width, height, rows


def _count(rows, rgb, tolerance=6):
    return sum(1 for row in rows for px in row if all(abs(a - b) <= tolerance for a, b in zip(px, rgb)))


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    records = F.load_records()
    report_a = build_report(records, None, run_id="run-a", generated_at="2026-11-25T00:00:00Z")
    fleet = F.run_b(records)
    fleet["gone-host"] = build_host_record("gone-host", unreachable=True, error="ssh: connect timed out")
    report = build_report(fleet, report_a, run_id="run-b", generated_at="2026-11-26T00:00:00Z",
                          waivers=parse_waivers(WAIVERS))
    directory = tmp_path_factory.mktemp("html")
    path = directory / "report.html"
    path.write_text(render_html(report))
    return report, str(path), str(directory)


def _bodies(dom):
    return re.findall(r'<tbody data-host="([^"]+)"><tr class="row (\w+)"', dom)


def test_script_sorts_failing_hosts_first_and_marks_ready(report_html):
    report, path, directory = report_html
    dom = _chromium(os.path.join(directory, "profile"), "--dump-dom", "file://" + path)
    assert 'data-ready="1"' in dom, "the page's script did not run"
    assert 'data-sorted="status:ascending"' in dom and 'aria-sort="ascending"' in dom
    bodies = _bodies(dom)
    assert sorted(h for h, _s in bodies) == sorted(report["hosts"])
    statuses = [s for _h, s in bodies]
    # failing first, then unreachable, then waived, then passing; host names ascending within each
    assert statuses == sorted(statuses, key=["fail", "unreachable", "waived", "pass"].index)
    assert (statuses.count("fail"), statuses.count("unreachable"), statuses.count("waived"),
            statuses.count("pass")) == (17, 1, 1, 5)
    assert dom.count('<tr class="detail" hidden=""') == len(report["hosts"])


def test_header_sort_by_host_descending(report_html):
    report, path, directory = report_html
    dom = _chromium(os.path.join(directory, "profile"), "--dump-dom", "file://" + path + "#sort=host:descending")
    assert 'data-sorted="host:descending"' in dom
    assert [h for h, _s in _bodies(dom)] == sorted(report["hosts"], reverse=True)


def test_screenshot_shows_pass_and_fail_colours(report_html):
    _report, path, directory = report_html
    png = os.path.join(directory, "report-html.png")
    # sorted by host name, so passing and failing hosts are both in the first screen
    _chromium(os.path.join(directory, "profile"), "--screenshot=%s" % png, "--window-size=1280,900",
              "--hide-scrollbars", "file://" + path + "#sort=host:ascending")
    width, height, rows = read_png(png)
    assert (width, height) == (1280, 900)
    pass_px, fail_px, unreachable_px = (_count(rows, PASS_RGB), _count(rows, FAIL_RGB), _count(rows, UNREACHABLE_RGB))
    # a badge is ~50x20 px; several of each kind are on screen
    assert pass_px > 1500, "no PASS badges visible (%d px)" % pass_px
    assert fail_px > 1500, "no FAIL badges visible (%d px)" % fail_px
    assert unreachable_px > 300, "no UNREACHABLE badge visible (%d px)" % unreachable_px
    # the page is not blank: most of it is light background, some of it is text
    dark = sum(1 for row in rows for px in row if max(px) < 80)
    assert dark > 5000, "hardly any text rendered (%d dark px)" % dark


def test_waived_and_conditional_verdicts_are_distinct_on_screen(report_html):
    """Every host expanded (#expand): the waived host's purple WAIVED badges, the expired waiver's
    red badge, and the blue "conditional" badges of verdicts that hold for some senders only."""
    report, path, directory = report_html
    dom = _chromium(os.path.join(directory, "profile"), "--dump-dom", "file://" + path + "#sort=host:ascending&expand")
    assert 'data-ready="1"' in dom
    row = dom[dom.index('data-host="allow-proto"'):]
    assert '<tr class="row waived"' in row[:200] and "WAIVED</span> until 2027-01-31 by voice-team" in row
    expired = dom[dom.index('data-host="range"'):]
    assert "WAIVER EXPIRED</span>" in expired[:6000]
    source = dom[dom.index('data-host="source-restricted"'):]
    assert 'class="badge conditional"' in source[:6000] and "from 198.18.0.250/32" in source[:6000]
    waivers = dom[dom.index('id="waivers"'):]
    for status in ("ACTIVE", "EXPIRED", "STALE"):
        assert ">%s</span>" % status in waivers
    # On screen: a small fleet (the waived host, the expired waiver, a source and an interface
    # restriction), every host expanded, so all of it fits into one screenshot.
    records = F.load_records()
    small = dict((host, records[host]) for host in ("allow-proto", "range", "source-restricted", "iface-restricted"))
    page = os.path.join(directory, "small.html")
    with open(page, "w") as fh:
        fh.write(render_html(build_report(small, run_id="small", generated_at="2026-11-26T00:00:00Z",
                                          waivers=parse_waivers(WAIVERS))))
    png = os.path.join(directory, "report-html-waived.png")
    _chromium(os.path.join(directory, "profile"), "--screenshot=%s" % png, "--window-size=1280,2400",
              "--hide-scrollbars", "file://" + page + "#sort=status:descending&expand")
    if os.environ.get("SIPGUARD_SCREENSHOT_DIR"):  # to look at it after the run
        shutil.copy(png, os.environ["SIPGUARD_SCREENSHOT_DIR"])
    width, height, rows = read_png(png)
    assert (width, height) == (1280, 2400)
    waived_px, conditional_px = _count(rows, WAIVED_RGB), _count(rows, CONDITIONAL_RGB)
    assert waived_px > 800, "no WAIVED badge/row visible (%d px)" % waived_px
    assert conditional_px > 300, "no conditional badge visible (%d px)" % conditional_px
    dark = sum(1 for row in rows for px in row if max(px) < 80)
    assert dark > 5000, "hardly any text rendered (%d dark px)" % dark
