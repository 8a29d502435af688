"""``pybpfnet l7``: watch DNS queries and HTTP requests on interfaces, one
line (or JSON line) per query/request as its response comes, until Ctrl-C
or ``--seconds``.

    pybpfnet l7 eth0 [eth1 ...] [--direction both|ingress|egress] [--json] [--seconds N]
                [--dns-port P ...] [--http-port P ...] [--snaplen N]
                [--h2-any-port] [--names FILE]

At the end queries still waiting are printed without a response and the
counters go to stderr. Needs root (CAP_BPF + CAP_NET_ADMIN).
"""

import sys

from pybpfnet.dataplanes import _monitor_cli

__all__ = ["add_parser", "cmd_l7"]


def cmd_l7(args, out=None):
    """Print DNS and HTTP records of interfaces as they complete."""
    from pybpfnet.dataplanes.l7 import L7Monitor

    out = out or sys.stdout
    with L7Monitor(args.iface, directions=_monitor_cli.directions(args),
                   dns_ports=tuple(args.dns_port or (53,)),
                   http_ports=tuple(args.http_port or (80, 8000, 8080)),
                   snaplen=args.snaplen, h2_any_port=args.h2_any_port,
                   resolver=_monitor_cli.resolver(args.names)) as mon:
        _monitor_cli.poll_until(mon, _monitor_cli.printer(out, args.json), out, args.seconds)
        stats = mon.stats()
    out.flush()
    _monitor_cli.print_stats("l7", stats)
    return 0


def add_parser(subparsers):
    """Add the ``l7`` command to an argparse subparsers object; it sets
    ``func`` returning an exit status."""
    p = _monitor_cli.command_parser(subparsers, "l7", "DNS/HTTP requests with latency at TC "
                                    "(L7 monitor)", __doc__)
    p.add_argument("--dns-port", type=int, action="append", metavar="P",
                   help="DNS port (repeatable; default 53)")
    p.add_argument("--http-port", type=int, action="append", metavar="P",
                   help="HTTP port (repeatable; default 80, 8000, 8080)")
    p.add_argument("--snaplen", type=int, default=256, metavar="N",
                   help="payload bytes sampled per packet (1..512)")
    p.add_argument("--h2-any-port", action="store_true",
                   help="detect the HTTP/2 preface on every TCP port")
    p.set_defaults(func=cmd_l7)
    return p
