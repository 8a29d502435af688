"""``pybpfnet flows``: watch the flows of interfaces, one line (or JSON
line) per flow as it ends, until Ctrl-C or ``--seconds``.

    pybpfnet flows eth0 [eth1 ...] [--direction both|ingress|egress]
                   [--json] [--seconds N] [--rtt-hist] [--srtt]
                   [--idle-timeout S] [--active-timeout S] [--max-flows N]
                   [--names FILE] [--prometheus [ADDR:]PORT] [--html FILE]

At the end the flows still in the table are flushed, the counters go to
stderr and, with ``--rtt-hist``, the handshake RTT histogram is printed
like bcc's tcprtt (a JSON line with ``--json``); ``--srtt`` traces the
kernel's smoothed RTT of the namespace's TCP sockets (``srtt=`` per flow)
and prints its histogram the same way; ``--names`` names addresses from
a static file, ``--prometheus`` serves metrics while it runs and
``--html`` writes a self-contained report at exit. Needs root (CAP_BPF +
CAP_NET_ADMIN).
"""

import argparse
import json
import sys
import time

__all__ = ["add_parser", "cmd_flows"]


def cmd_flows(args, out=None):
    """Monitor flows on interfaces and print them as they end."""
    from pybpfnet.dataplanes import flow_views_cli
    from pybpfnet.dataplanes.flowmon import FlowMonitor

    out = out or sys.stdout
    directions = ("ingress", "egress") if args.direction == "both" else (args.direction,)
    emit = (lambda r: out.write(r.to_json() + "\n")) if args.json else \
        (lambda r: out.write(str(r) + "\n"))
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    with FlowMonitor(args.iface, directions=directions, max_flows=args.max_flows,
                     idle_timeout=args.idle_timeout, active_timeout=args.active_timeout,
                     resolver=_resolver(getattr(args, "names", None)),
                     srtt=getattr(args, "srtt", False)) as fm:
        views = flow_views_cli.FlowsViews(args, fm)      # --prometheus, --html
        emit = views.wrap(emit)
        try:
            try:
                while deadline is None or time.monotonic() < deadline:
                    left = 0.5 if deadline is None else \
                        max(0.0, min(0.5, deadline - time.monotonic()))
                    for r in fm.poll(timeout=left):
                        emit(r)
                    out.flush()
            except KeyboardInterrupt:
                pass
            for r in fm.flush():
                emit(r)
            if args.rtt_hist:
                hist = fm.rtt_histogram()
                out.write((json.dumps({"rtt_histogram": hist.to_dict()}) if args.json
                           else str(hist)) + "\n")
            if getattr(args, "srtt", False):
                hist = fm.srtt_histogram()
                out.write((json.dumps({"srtt_histogram": hist.to_dict()}) if args.json
                           else "kernel smoothed RTT (tcp_sock srtt):\n%s" % hist) + "\n")
            stats = fm.stats()
        finally:
            views.close()       # stops the metrics server, writes the HTML report
    out.flush()
    print("flowmon: %s" % ", ".join("%s=%d" % kv for kv in stats.to_dict().items()),
          file=sys.stderr)
    return 0


def _resolver(path):
    if path is None:
        return None
    from pybpfnet.dataplanes.resolver import StaticResolver
    return StaticResolver.from_file(path)


def add_parser(subparsers):
    """Add the ``flows`` command to an argparse subparsers object; it sets
    ``func`` returning an exit status."""
    p = subparsers.add_parser("flows", help="per-flow packets/bytes/RTT at TC (flow monitor)",
                              description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("iface", nargs="+", help="interface name(s)")
    p.add_argument("--direction", choices=("both", "ingress", "egress"), default="both")
    p.add_argument("--json", action="store_true", help="JSON lines")
    p.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    p.add_argument("--rtt-hist", action="store_true", help="print the handshake RTT histogram")
    p.add_argument("--srtt", action="store_true",
                   help="trace the kernel's smoothed RTT (tcp_probe): srtt= per flow and "
                        "its histogram at exit")
    p.add_argument("--idle-timeout", type=float, default=15.0, metavar="S")
    p.add_argument("--active-timeout", type=float, default=60.0, metavar="S")
    p.add_argument("--max-flows", type=int, default=65536, metavar="N")
    p.add_argument("--names", metavar="FILE",
                   help="name addresses from FILE ('CIDR-or-IP name' lines or TOML [names])")
    from pybpfnet.dataplanes import flow_views_cli
    flow_views_cli.add_flows_options(p)                 # --prometheus, --html
    p.set_defaults(func=cmd_flows)
    return p

