"""``pybpfnet top``: a live view of the busiest flows; and the
``--prometheus``/``--html`` outputs of ``pybpfnet flows``.

    pybpfnet top eth0 [eth1 ...] [--sort bytes|packets] [-n N] [--interval S]
                 [--duration S] [--iterations N] [--plain | --json]
                 [--direction both|ingress|egress]

Rates are per interval (default 1 s), from successive readings of the
flow table plus the records exported meanwhile. Ctrl-C ends it. Needs root
(CAP_BPF + CAP_NET_ADMIN); the live table needs the ``rich`` extra (plain
text without it).
"""

import argparse
import sys

from pybpfnet.dataplanes import _monitor_cli

__all__ = ["add_parser", "cmd_top", "add_flows_options", "FlowsViews"]


def cmd_top(args, out=None):
    """Show the busiest flows of interfaces, refreshed every interval."""
    from pybpfnet.dataplanes.flow_top import run_top
    from pybpfnet.dataplanes.flowmon import FlowMonitor

    directions = _monitor_cli.directions(args)
    mode = "json" if args.json else "plain" if args.plain else "auto"
    with FlowMonitor(args.iface, directions=directions, idle_timeout=args.idle_timeout,
                     active_timeout=args.active_timeout,
                     sweep_interval=min(1.0, args.interval)) as fm:
        run_top(fm, sort=args.sort, n=args.n, interval=args.interval,
                iterations=args.iterations, duration=args.duration, mode=mode,
                out=out or sys.stdout)
    return 0


def _count(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a whole number >= 1, not %r" % text) \
            from None
    if v < 1:
        raise argparse.ArgumentTypeError("expected a whole number >= 1, not %d" % v)
    return v


def add_parser(subparsers):
    """Add the ``top`` command to an argparse subparsers object."""
    p = subparsers.add_parser("top", help="live view of the busiest flows (flow monitor)",
                              description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("iface", nargs="+", help="interface name(s)")
    p.add_argument("--direction", choices=("both", "ingress", "egress"), default="both")
    p.add_argument("--sort", choices=("bytes", "packets"), default="bytes",
                   help="rank by bytes/s or packets/s (default bytes)")
    p.add_argument("-n", type=_count, default=20, metavar="N", help="flows shown (default 20)")
    p.add_argument("--interval", type=_monitor_cli.seconds, default=1.0, metavar="S",
                   help="seconds between frames (default 1)")
    p.add_argument("--duration", type=_monitor_cli.seconds, metavar="S",
                   help="stop after S seconds")
    p.add_argument("--iterations", type=_count, metavar="N", help="stop after N frames")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--plain", action="store_true", help="plain text frames (no rich)")
    g.add_argument("--json", action="store_true", help="one JSON line per frame")
    p.add_argument("--idle-timeout", type=float, default=15.0, metavar="S")
    p.add_argument("--active-timeout", type=float, default=60.0, metavar="S")
    p.set_defaults(func=cmd_top)
    return p


# -- pybpfnet flows --prometheus / --html ----------------------------------------

def add_flows_options(p):
    """Add ``--prometheus [ADDR:]PORT`` and ``--html FILE`` to the ``flows``
    parser."""
    p.add_argument("--prometheus", metavar="[ADDR:]PORT",
                   help="serve Prometheus metrics on ADDR:PORT (default address 127.0.0.1; "
                        "Hubble uses port 9965); needs prometheus-client")
    p.add_argument("--html", metavar="FILE",
                   help="write a self-contained HTML report (graph, top flows, histograms) "
                        "at exit")


class FlowsViews:
    """What ``flows --prometheus``/``--html`` add around a FlowMonitor: an
    exporter fed with every record and serving metrics while the command
    runs, and the records kept for the report written at ``close()``.
    A context manager; ``wrap(emit)`` returns an emit function that also
    feeds them (FlowRecords, and DNS/HTTP records by their fields)."""

    def __init__(self, args, monitor):
        self._monitor = monitor
        self._html = getattr(args, "html", None)
        self._title = "pybpfnet flows: %s" % ", ".join(map(str, getattr(args, "iface", ())))
        self._records, self._dns, self._http = [], [], []
        self._exporter = self._server = self._watch = None
        listen = getattr(args, "prometheus", None)
        if listen:
            from pybpfnet.dataplanes.flow_export import PrometheusExporter, parse_listen
            addr, port = parse_listen(listen)
            self._exporter = PrometheusExporter()
            self._watch = self._exporter.watch(monitor)
            try:
                self._server = self._exporter.serve(port, addr)
            except BaseException:
                self._watch.close()
                raise
            print("flows: metrics on %s" % self._server.url, file=sys.stderr)

    def feed(self, rec):
        """Count ``rec`` in the exporter and keep it for the report."""
        if self._exporter is not None:
            self._exporter.observe(rec)
        if self._html:
            if hasattr(rec, "qname"):
                self._dns.append(rec)
            elif hasattr(rec, "method"):
                self._http.append(rec)
            else:
                self._records.append(rec)

    def wrap(self, emit):
        """``emit`` that also feeds each record (``emit`` itself when
        neither output is on)."""
        if self._exporter is None and not self._html:
            return emit

        def both(rec):
            self.feed(rec)
            emit(rec)
        return both

    def close(self):
        """Stop serving and write the report (once)."""
        if self._server is not None:
            self._server.close()
            self._watch.close()
            self._server = None
        if self._html:
            from pybpfnet.dataplanes._flow_report import render_report
            fm = self._monitor
            hists = {}
            if not getattr(fm, "closed", False):    # a closed monitor has no maps to read
                hists["TCP handshake RTT"] = fm.rtt_histogram()
                if callable(getattr(fm, "srtt_histogram", None)):
                    hists["TCP smoothed RTT (srtt)"] = fm.srtt_histogram()
            text = render_report(self._records, histograms=hists, dns=self._dns,
                                 http=self._http, title=self._title)
            with open(self._html, "w", encoding="utf-8") as f:
                f.write(text)
            print("flows: wrote %s (%d records)" % (self._html, len(self._records)),
                  file=sys.stderr)
            self._html = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
