"""FlowRates/rank/render of ``pybpfnet top`` without a kernel: readings of
a flow table and exported records in, totals and rates out."""

import io
import json

import attrs

import pytest

from pybpfnet.dataplanes.flow_top import FlowRates, frame_json, rank, render_plain, run_top
from pybpfnet.dataplanes.flowmon import FlowRecord


def rec(sport, packets, bytes, reason=None, dport=80, direction="egress"):
    return FlowRecord(src="10.0.0.1", dst="10.0.0.2", sport=sport, dport=dport, protocol=6,
                      ifindex=2, direction=direction, packets=packets, bytes=bytes,
                      tcp_flags=0x10, first_ns=1, last_ns=2, reason=reason, interface="eth0")


def by_port(rows):
    return {r.record.sport: r for r in rows}


def test_rates_from_successive_table_readings():
    fr = FlowRates()
    first = by_port(fr.update([], [rec(1, 10, 1000), rec(2, 1, 100)], now=100.0))
    assert first[1].bytes == 1000 and first[1].bytes_per_s is None      # no previous reading
    rows = by_port(fr.update([], [rec(1, 30, 5000), rec(2, 2, 150)], now=102.0))
    assert (rows[1].packets, rows[1].bytes) == (30, 5000)
    assert rows[1].bytes_per_s == 2000.0 and rows[1].packets_per_s == 10.0
    assert rows[2].bytes_per_s == 25.0 and not rows[2].ended


def test_exports_keep_totals_across_fin_idle_and_active_slices():
    fr = FlowRates()
    fr.update([], [rec(1, 10, 1000)], now=0.0)
    # an active-timeout slice moved 900 bytes out of the table; 300 more came
    rows = by_port(fr.update([rec(1, 9, 900, "active")], [rec(1, 4, 400)], now=1.0))
    assert rows[1].bytes == 1300 and rows[1].bytes_per_s == 300.0
    # the flow ends: the FIN record carries the 400 bytes the table held and
    # 200 new ones, and the flow leaves the table: reported once, ended
    rows = by_port(fr.update([rec(1, 6, 600, "fin")], [], now=2.0))
    assert rows[1].ended and rows[1].bytes == 1500 and rows[1].bytes_per_s == 200.0
    assert rows[1].record.reason == "fin"
    # gone and quiet: left out, then forgotten
    assert fr.update([], [], now=3.0) == []
    assert fr.update([], [], now=4.0) == [] and not fr._latest


def test_flow_born_and_gone_within_an_interval():
    fr = FlowRates()
    fr.update([], [], now=0.0)
    rows = by_port(fr.update([rec(7, 3, 300, "fin")], [], now=0.5))
    assert rows[7].ended and rows[7].bytes_per_s == 600.0 and rows[7].packets_per_s == 6.0


def test_totals_never_go_backwards():
    """A flow swept out of the table between a poll and the snapshot is
    missing from both readings, and its record comes with the next poll:
    no negative rate, no double count."""
    fr = FlowRates()
    fr.update([], [rec(1, 5, 500)], now=0.0)
    assert fr.update([], [], now=1.0) == []            # gone from the table, not yet polled
    rows = by_port(fr.update([rec(1, 6, 600, "idle")], [], now=2.0))
    assert rows[1].bytes == 600 and rows[1].bytes_per_s == 100.0 and rows[1].ended
    # a snapshot that reads less than the previous one never gives a negative rate
    fr.update([], [rec(2, 5, 500)], now=3.0)
    rows = by_port(fr.update([], [rec(2, 4, 400)], now=4.0))
    assert rows[2].bytes == 500 and rows[2].bytes_per_s == 0.0
    assert fr.update([], [], now=5.0) == [] and fr.update([], [], now=6.0) == []
    assert fr._latest == {} and fr._exported == {}      # forgotten


def test_rank_by_bytes_or_packets():
    fr = FlowRates()
    fr.update([], [rec(1, 0, 0), rec(2, 0, 0), rec(3, 0, 0)], now=0.0)
    rows = fr.update([], [rec(1, 100, 1000), rec(2, 10, 50000), rec(3, 50, 2000)], now=1.0)
    assert [r.record.sport for r in rank(rows, "bytes", 3)] == [2, 3, 1]
    assert [r.record.sport for r in rank(rows, "packets", 2)] == [1, 3]
    with pytest.raises(ValueError, match="sort must be"):
        rank(rows, "flows")


def test_render_plain_and_json_frame():
    fr = FlowRates()
    fr.update([], [rec(40000, 1, 100)], now=0.0)
    rows = fr.update([], [rec(40000, 11, 2148)], now=2.0)
    text = render_plain(rows)
    line = [ln for ln in text.splitlines() if "10.0.0.1:40000" in ln][0]
    assert "10.0.0.2:80" in line and "1.0 KiB/s" in line and "5.0/s" in line
    assert "2.1 KiB" in line and text.splitlines()[1].split()[:3] == ["IFACE", "DIR", "PROTO"]
    frame = json.loads(frame_json(rows, 2.0))
    assert frame["interval"] == 2.0
    (f,) = frame["flows"]
    assert (f["sport"], f["bytes"], f["bytes_per_s"], f["packets_per_s"]) == (40000, 2148,
                                                                           1024.0, 5.0)


def test_render_rich_table():
    rich = pytest.importorskip("rich")
    from rich.console import Console

    from pybpfnet.dataplanes.flow_top import render_rich
    fr = FlowRates()
    fr.update([], [rec(40000, 1, 100)], now=0.0)
    rows = fr.update([], [rec(40000, 11, 2148)], now=2.0)
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(render_rich(rows))
    text = console.export_text()
    assert rich and "10.0.0.1:40000" in text and "1.0 KiB/s" in text and "BYTES/S" in text
    v6 = FlowRates()
    v6.update([], [], now=0.0)
    six = attrs.evolve(rec(40000, 1, 100), src="fd00::1", dst="fd00::2")
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(render_rich(v6.update([], [six], now=1.0)))
    assert "[fd00::1]:40000" in console.export_text()      # not taken for markup


class ScriptedMonitor:
    """The two methods run_top reads, answering from a script of table
    readings (no kernel: exercises the loop and its stop conditions)."""

    def __init__(self, tables):
        self.tables = list(tables)
        self.reads = 0

    def poll(self, timeout=0):
        return []

    def active(self):
        table = self.tables[min(self.reads, len(self.tables) - 1)]
        self.reads += 1
        return table


def test_run_top_stops_after_iterations():
    mon = ScriptedMonitor([[rec(1, 1, 100)], [rec(1, 2, 200)], [rec(1, 3, 300)]])
    buf = io.StringIO()
    assert run_top(mon, interval=0.01, iterations=3, mode="json", out=buf) == 3
    frames = [json.loads(ln) for ln in buf.getvalue().splitlines()]
    assert [f["flows"][0]["bytes"] for f in frames] == [100, 200, 300]
    assert frames[0]["interval"] is None and frames[2]["flows"][0]["bytes_per_s"] > 0
    with pytest.raises(ValueError, match="mode must be"):
        run_top(mon, mode="html")
