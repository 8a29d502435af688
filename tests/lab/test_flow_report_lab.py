"""``pybpfnet flows --html`` on real lab traffic, opened in headless
Chromium: the report fetches nothing, its script runs, the DOM holds the
graph (the lab's two hosts, one edge with the bytes of the records the
command printed) and one histogram bar per RTT bucket, and the screenshot
is a picture, not a blank page."""

import html.parser
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import types
import zlib

import pytest

from flowlab import drain, serve_one
from pybpfnet.dataplanes import flowmon_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Elements(html.parser.HTMLParser):
    def __init__(self, text):
        super().__init__()
        self.tags = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def find(self, tag, cls):
        return [a for t, a in self.tags if t == tag and cls in (a.get("class") or "").split()]


def png_pixels(data):
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB/RGBA PNG, with
    zlib and the five PNG row filters (RFC 2083)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        n, kind = struct.unpack_from(">I4s", data, pos)
        body = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    width, height, depth, color, _, _, interlace = ihdr
    assert depth == 8 and color in (2, 6) and not interlace, ihdr
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif f == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev))
        elif f == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif f == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) \
                    & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def chromium(*args):
    profile = tempfile.mkdtemp(prefix="pybn-chromium-")
    try:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--user-data-dir=" + profile, *args],
            capture_output=True, timeout=60, check=True)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def hosts(lab):
    return lab.two_hosts()


def run_flows_with_traffic(hosts, report):
    """``pybpfnet flows eth0 --json --rtt-hist --html REPORT`` in the client
    namespace for 6 s while the client sends UDP datagrams and makes two TCP
    connections to the server. Returns (the UDP source port, the JSON lines
    it printed)."""
    args = types.SimpleNamespace(
        iface=["eth0"], direction="both", json=True, seconds=6.0, rtt_hist=True, srtt=False,
        idle_timeout=0.2, active_timeout=3600, max_flows=1024, names=None, prometheus=None,
        html=str(report))
    out = io.StringIO()
    result = {}
    ready = threading.Event()

    def run():
        try:
            with hosts.client.enter():
                ready.set()
                result["rc"] = flowmon_cli.cmd_flows(args, out=out)
        except BaseException as e:
            result["error"] = e
        finally:
            ready.set()

    t = threading.Thread(target=run)
    t.start()
    try:
        ready.wait()
        # attached once a probe datagram's flow comes out (idle timeout
        # 0.2 s): one datagram from a new port every 0.3 s until one does
        with hosts.server.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
            rx.bind((str(hosts.server_ip), 0))
            marks = []
            while not any(m in out.getvalue() for m in marks):
                assert t.is_alive(), result
                with hosts.client.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.sendto(b"p", rx.getsockname())
                    marks.append('"sport":%d,' % probe.getsockname()[1])
                time.sleep(0.3)
        with hosts.server.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
                hosts.client.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            rx.bind((str(hosts.server_ip), 0))
            for p in (100, 200, 300):
                tx.sendto(b"u" * p, rx.getsockname())
            udp_port = tx.getsockname()[1]
        with hosts.server.create_server((str(hosts.server_ip), 0)) as srv:
            for size in (50_000, 3_000):
                with serve_one(srv), hosts.client.create_connection(srv.getsockname()) as c:
                    c.sendall(b"t" * size)
                    c.shutdown(socket.SHUT_WR)
                    drain(c)
    finally:
        t.join()
    assert "error" not in result, result.get("error")
    assert result["rc"] == 0
    return udp_port, [json.loads(ln) for ln in out.getvalue().splitlines()]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian package chromium)")
def test_html_report_renders_in_headless_chromium(hosts, tmp_path):
    report = tmp_path / "report.html"
    udp_port, lines = run_flows_with_traffic(hosts, report)
    flows = [d for d in lines if "src" in d]
    (hist,) = [d["rtt_histogram"] for d in lines if "rtt_histogram" in d]
    client, server = str(hosts.client_ip), str(hosts.server_ip)
    udp = [d for d in flows if d["protocol"] == "UDP" and d["sport"] == udp_port]
    assert sum(d["bytes"] for d in udp) == sum(14 + 20 + 8 + p for p in (100, 200, 300))
    assert hist["total"] == 2                 # two handshakes
    between = sum(d["bytes"] for d in flows if {d["src"], d["dst"]} == {client, server})

    page = report.read_text()
    # self-contained: no URL anywhere, no attribute or CSS that could fetch
    assert "http://" not in page and "https://" not in page
    el = Elements(page)
    assert not [a for t, a in el.tags if set(a) & {"src", "href", "srcset", "data"}]
    assert "url(" not in page and "@import" not in page

    dom = chromium("--dump-dom", report.as_uri()).stdout.decode()
    assert 'data-js="ok"' in dom              # the inline script ran to its end
    el = Elements(dom)
    nodes = {a["data-label"] for a in el.find("g", "node")}
    assert {client, server} <= nodes
    edges = {(a["data-src"], a["data-dst"]): int(a["data-bytes"]) for a in el.find("line", "edge")}
    pair = tuple(sorted((client, server)))
    assert edges[pair] == between and between > 53_000
    bars = [(int(a["data-low"]), int(a["data-high"]), int(a["data-count"]))
            for a in el.find("rect", "bar")]
    assert bars == [(b["low"], b["high"], b["count"]) for b in hist["buckets"]]
    assert sum(c for _, _, c in bars) == 2

    shot = tmp_path / "report.png"
    chromium("--screenshot=" + str(shot), "--window-size=900,1100", "--hide-scrollbars",
             report.as_uri())
    width, height, bpp, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (900, 1100)
    colours = set()
    for row in rows[::10]:
        colours.update(row[i:i + 3] for i in range(0, len(row), bpp * 7))
    assert len(colours) > 20, len(colours)    # text, graph, bars: not a blank page
    # the graph's node blue (#3b6fd4, anti-aliased edges aside) is on screen
    blue = bytes((0x3b, 0x6f, 0xd4))
    assert any(blue in row for row in rows[::2])
    os.remove(shot)
