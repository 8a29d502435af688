"""``top`` for flows: the busiest flows of a FlowMonitor by bytes or packets
per second, redrawn every interval (rich when installed, plain text or
JSON lines otherwise).

::

    from pybpfnet.dataplanes.flow_top import FlowRates, rank

    rates = FlowRates()
    rows = rates.update(exported=fm.poll(0), active=fm.active(), now=time.monotonic())
    for row in rank(rows, sort="bytes", n=10):
        print(row.record, row.bytes_per_s)

A flow's running total is what the monitor exported of it so far plus
what its table holds now, so rates stay right across FIN exports, idle
evictions and active-timeout slices (which move counts from the table to
exported records).
"""

import json
import sys
import time

import attrs

from pybpfnet.dataplanes._flow_report import human_bytes
from pybpfnet.dataplanes._tc_monitor import endpoint, protocol_name

__all__ = ["FlowRate", "FlowRates", "rank", "render_plain", "render_rich", "frame_json",
           "run_top"]

SORTS = ("bytes", "packets")


@attrs.frozen
class FlowRate:
    """One flow's running totals and its rates over the last interval.
    ``record`` is the flow's latest record (identity, flags, RTT);
    ``packets``/``bytes`` the totals since it was first seen (exported
    plus in the table); ``packets_per_s``/``bytes_per_s`` None on the first
    update (no previous reading); ``ended`` when the flow left the table
    (FIN/RST, idle) during the interval."""

    record: object
    packets: int
    bytes: int
    packets_per_s: object
    bytes_per_s: object
    ended: bool = False

    def to_dict(self):
        """The record's JSON fields with this row's totals and rates (no
        export reason or times)."""
        d = self.record.to_dict()
        d.update(packets=self.packets, bytes=self.bytes, packets_per_s=self.packets_per_s,
                 bytes_per_s=self.bytes_per_s, ended=self.ended)
        for k in ("reason", "start", "end"):
            d.pop(k, None)
        return d


class FlowRates:
    """Running per-flow totals and rates from successive readings of a
    flow monitor. Pure bookkeeping: no kernel; times are passed in."""

    def __init__(self):
        self._exported = {}         # key -> [packets, bytes] exported so far
        self._prev = {}             # key -> (packets, bytes) total at the previous update
        self._latest = {}           # key -> latest record
        self._quiet = {}            # key -> quiet updates in a row (gone from the table)
        self._prev_time = None

    def update(self, exported, active, now):
        """Fold in the records ``exported`` since the previous call and an
        ``active()`` snapshot taken at ``now`` (seconds, monotonic); returns
        a FlowRate for every flow with traffic in the interval or still in
        the table. Flows gone from the table and quiet for an interval are
        left out, and forgotten after a second one. A total never goes
        backwards: a record counted in both the snapshot and a later
        export (a race between the two readings) yields a zero rate, not a
        negative one."""
        for r in exported:
            e = self._exported.setdefault(r.key, [0, 0])
            e[0] += r.packets
            e[1] += r.bytes
            self._latest[r.key] = r
        live = {}
        for r in active:
            live[r.key] = r
            self._latest[r.key] = r
        dt = None if self._prev_time is None else now - self._prev_time
        out, prev = [], {}
        for key in list(self._latest):
            e = self._exported.get(key, (0, 0))
            a = live.get(key)
            tot = (e[0] + (a.packets if a else 0), e[1] + (a.bytes if a else 0))
            before = self._prev.get(key)
            if before is not None:
                tot = (max(tot[0], before[0]), max(tot[1], before[1]))
            prev[key] = tot
            if a is None and before is not None and tot == before:
                # not in the table and no traffic this interval: hidden, and
                # forgotten after a second such interval (a flow the sweep
                # took out just before the snapshot shows up in the next
                # poll: its total must still be known then)
                self._quiet[key] = self._quiet.get(key, 0) + 1
                if self._quiet[key] >= 2:
                    del self._latest[key], prev[key], self._quiet[key]
                    self._exported.pop(key, None)
                continue
            self._quiet.pop(key, None)
            if dt is None or dt <= 0:
                pps = bps = None
            else:
                b = before or (0, 0)
                pps, bps = (tot[0] - b[0]) / dt, (tot[1] - b[1]) / dt
            out.append(FlowRate(self._latest[key], tot[0], tot[1], pps, bps, ended=a is None))
        self._prev, self._prev_time = prev, now
        return out


def rank(rows, sort="bytes", n=20):
    """The ``n`` busiest FlowRates: by bytes (or packets) per second, then
    by total; rows without a rate yet sort by total. Raises ValueError for
    another ``sort``."""
    if sort not in SORTS:
        raise ValueError("sort must be 'bytes' or 'packets', not %r" % (sort,))
    if sort == "bytes":
        def k(r):
            return (-(r.bytes_per_s or 0), -r.bytes, -r.packets, str(r.record.key))
    else:
        def k(r):
            return (-(r.packets_per_s or 0), -r.packets, -r.bytes, str(r.record.key))
    return sorted(rows, key=k)[:max(0, int(n))]


def _rate(v, unit):
    if v is None:
        return "-"
    if unit == "B":
        return human_bytes(v) + "/s"
    return "%.1f/s" % v


def _cells(row):
    r = row.record
    rtt = "%.3f" % (r.rtt_ns / 1e6) if r.rtt_ns else "-"
    return (str(r.interface or r.ifindex), r.direction[:3],
            protocol_name(r.protocol),
            endpoint(r.src, r.sport, getattr(r, "src_name", None)),
            endpoint(r.dst, r.dport, getattr(r, "dst_name", None)),
            _rate(row.packets_per_s, "p"), _rate(row.bytes_per_s, "B"), str(row.packets),
            human_bytes(row.bytes), rtt, "ended" if row.ended else "")


_HEADERS = ("IFACE", "DIR", "PROTO", "SOURCE", "DESTINATION", "PKTS/S", "BYTES/S", "PACKETS",
            "BYTES", "RTT MS", "")
_RIGHT = {5, 6, 7, 8, 9}


def _title(rows, shown, sort):
    bps = sum(r.bytes_per_s or 0 for r in rows)
    pps = sum(r.packets_per_s or 0 for r in rows)
    return "pybpfnet top: %d flows, %s/s, %.1f packets/s (top %d by %s/s)  %s" % (
        len(rows), human_bytes(bps), pps, len(shown), sort, time.strftime("%H:%M:%S"))


def render_plain(rows, sort="bytes", n=20):
    """One frame as plain text: a title line and a fixed-width table."""
    shown = rank(rows, sort, n)
    table = [_HEADERS] + [_cells(r) for r in shown]
    widths = [max(len(row[i]) for row in table) for i in range(len(_HEADERS))]
    lines = [_title(rows, shown, sort)]
    for row in table:
        lines.append("  ".join(c.rjust(w) if i in _RIGHT else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    return "\n".join(lines) + "\n"


def render_rich(rows, sort="bytes", n=20):
    """One frame as a ``rich.table.Table`` (needs the ``rich`` extra)."""
    from rich.table import Table
    from rich.text import Text
    shown = rank(rows, sort, n)
    t = Table(title=Text(_title(rows, shown, sort)), title_justify="left", expand=False)
    for i, h in enumerate(_HEADERS):
        t.add_column(h, justify="right" if i in _RIGHT else "left", no_wrap=True)
    for r in shown:
        # Text, not markup: "[fd00::1]:80" is not a style tag
        t.add_row(*(Text(c) for c in _cells(r)), style="dim" if r.ended else None)
    return t


def frame_json(rows, elapsed, sort="bytes", n=20):
    """One frame as a JSON line: ``{"time", "interval", "flows": [...]}``
    (``interval``: seconds the rates are over, None on the first frame)."""
    return json.dumps({"time": time.time(), "interval": elapsed,
                       "flows": [r.to_dict() for r in rank(rows, sort, n)]},
                      separators=(",", ":"))


def _have_rich():
    import importlib.util
    return importlib.util.find_spec("rich") is not None


def run_top(monitor, *, sort="bytes", n=20, interval=1.0, iterations=None, duration=None,
            mode="auto", out=None, on_records=None):
    """Show the busiest flows of ``monitor`` every ``interval`` seconds until
    Ctrl-C, ``iterations`` frames or ``duration`` seconds. ``mode``: "rich"
    (a live table on a terminal, printed frames elsewhere), "plain",
    "json" (one JSON line per frame) or "auto" (rich when installed and
    ``out`` is a terminal, else plain). ``on_records`` gets the records
    the monitor exported in each interval (e.g. an exporter's
    ``observe_flow``). Returns the number of frames shown. Raises
    ValueError for a bad ``sort``/``mode``; BpfError from the monitor."""
    if sort not in SORTS:
        raise ValueError("sort must be 'bytes' or 'packets', not %r" % (sort,))
    if mode not in ("auto", "rich", "plain", "json"):
        raise ValueError("mode must be auto, rich, plain or json, not %r" % (mode,))
    out = out or sys.stdout
    tty = hasattr(out, "isatty") and out.isatty()
    if mode == "auto":
        mode = "rich" if tty and _have_rich() else "plain"
    if mode == "rich" and not _have_rich():
        raise ImportError("the rich view needs rich: pip install 'pybpfnet[rich]'")
    rates = FlowRates()
    start = time.monotonic()
    end = None if duration is None else start + float(duration)
    live = console = None
    if mode == "rich":
        from rich.console import Console
        console = Console(file=out, force_terminal=tty or None, width=None if tty else 160)
        if tty:
            from rich.live import Live
            live = Live(console=console, auto_refresh=False, transient=False)
            live.start()
    frames, last, got = 0, None, []
    try:
        while True:
            # records exported while waiting count towards this interval
            got += monitor.poll(0)
            now = time.monotonic()
            if on_records is not None:
                for r in got:
                    on_records(r)
            rows = rates.update(got, monitor.active(), now)
            got = []
            elapsed = None if last is None else now - last
            last = now
            if mode == "json":
                out.write(frame_json(rows, elapsed, sort, n) + "\n")
            elif mode == "plain":
                out.write(render_plain(rows, sort, n) + "\n")
            elif live is not None:
                live.update(render_rich(rows, sort, n), refresh=True)
            else:
                console.print(render_rich(rows, sort, n))
            out.flush()
            frames += 1
            if iterations is not None and frames >= iterations:
                break
            deadline = now + float(interval)
            if end is not None and deadline > end:
                if now >= end:
                    break
                deadline = end
            while (left := deadline - time.monotonic()) > 0:
                got += monitor.poll(timeout=left)
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
    return frames

