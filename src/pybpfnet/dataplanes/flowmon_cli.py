"""``pybpfnet flows``: watch the flows of interfaces, one line (or JSON
line) per flow as it ends, until Ctrl-C or ``--seconds``.

    pybpfnet flows eth0 [eth1 ...] [--direction both|ingress|egress]
                   [--json] [--seconds N] [--rtt-hist] [--srtt]
                   [--idle-timeout S] [--active-timeout S] [--max-flows N]
                   [--names FILE] [--l7] [--prometheus [ADDR:]PORT] [--html FILE]

At the end the flows still in the table are flushed, the counters go to
stderr and, with ``--rtt-hist``, the handshake RTT histogram is printed
like bcc's tcprtt (a JSON line with ``--json``); ``--srtt`` traces the
kernel's smoothed RTT of the namespace's TCP sockets (``srtt=`` per flow)
and prints its histogram the same way; ``--names`` names addresses from
a static file, ``--l7`` adds DNS and HTTP records (the L7 monitor on the
same interfaces), ``--prometheus`` serves metrics while it runs and
``--html`` writes a self-contained report at exit. Needs root (CAP_BPF +
CAP_NET_ADMIN).
"""

import contextlib
import json
import sys

from pybpfnet.dataplanes import _monitor_cli

__all__ = ["add_parser", "cmd_flows"]


def cmd_flows(args, out=None):
    """Monitor flows on interfaces and print them as they end."""
    from pybpfnet.dataplanes import flow_views_cli
    from pybpfnet.dataplanes.flowmon import FlowMonitor

    out = out or sys.stdout
    resolver = _monitor_cli.resolver(getattr(args, "names", None))
    with contextlib.ExitStack() as stack:
        fm = stack.enter_context(FlowMonitor(
            args.iface, directions=_monitor_cli.directions(args), max_flows=args.max_flows,
            idle_timeout=args.idle_timeout, active_timeout=args.active_timeout,
            resolver=resolver, srtt=getattr(args, "srtt", False)))
        monitors = [fm]
        if getattr(args, "l7", False):
            from pybpfnet.dataplanes.l7 import L7Monitor
            monitors.append(stack.enter_context(L7Monitor(
                args.iface, directions=_monitor_cli.directions(args), resolver=resolver)))
        views = flow_views_cli.FlowsViews(args, fm)      # --prometheus, --html
        try:
            _monitor_cli.poll_until(monitors, views.wrap(_monitor_cli.printer(out, args.json)),
                                    out, args.seconds)
            if args.rtt_hist:
                hist = fm.rtt_histogram()
                out.write((json.dumps({"rtt_histogram": hist.to_dict()}) if args.json
                           else str(hist)) + "\n")
            if getattr(args, "srtt", False):
                hist = fm.srtt_histogram()
                out.write((json.dumps({"srtt_histogram": hist.to_dict()}) if args.json
                           else "kernel smoothed RTT (tcp_sock srtt):\n%s" % hist) + "\n")
            stats = [("flowmon", m.stats()) if m is fm else ("l7", m.stats())
                     for m in monitors]
        finally:
            views.close()       # stops the metrics server, writes the HTML report
    out.flush()
    for what, st in stats:
        _monitor_cli.print_stats(what, st)
    return 0


def add_parser(subparsers):
    """Add the ``flows`` command to an argparse subparsers object; it sets
    ``func`` returning an exit status."""
    p = _monitor_cli.command_parser(subparsers, "flows", "per-flow packets/bytes/RTT at TC "
                                    "(flow monitor)", __doc__)
    p.add_argument("--rtt-hist", action="store_true", help="print the handshake RTT histogram")
    p.add_argument("--srtt", action="store_true",
                   help="trace the kernel's smoothed RTT (tcp_probe): srtt= per flow and "
                        "its histogram at exit")
    p.add_argument("--idle-timeout", type=float, default=15.0, metavar="S")
    p.add_argument("--active-timeout", type=float, default=60.0, metavar="S")
    p.add_argument("--max-flows", type=int, default=65536, metavar="N")
    p.add_argument("--l7", action="store_true",
                   help="also watch DNS and HTTP (the L7 monitor): their records are printed "
                        "and go to --prometheus and --html too")
    from pybpfnet.dataplanes import flow_views_cli
    flow_views_cli.add_flows_options(p)                 # --prometheus, --html
    p.set_defaults(func=cmd_flows)
    return p

