"""``pybpfnet l7``: watch DNS queries and HTTP requests on interfaces, one
line (or JSON line) per query/request as its response comes, until Ctrl-C
or ``--seconds``.

    pybpfnet l7 eth0 [eth1 ...] [--json] [--seconds N]
                [--dns-port P ...] [--http-port P ...] [--snaplen N]
                [--h2-any-port] [--names FILE]

At the end queries still waiting are printed without a response and the
counters go to stderr. Needs root (CAP_BPF + CAP_NET_ADMIN).
"""

import argparse
import sys
import time

__all__ = ["add_parser", "cmd_l7"]


def cmd_l7(args, out=None):
    """Print DNS and HTTP records of interfaces as they complete."""
    from pybpfnet.dataplanes.l7 import L7Monitor
    from pybpfnet.dataplanes.resolver import StaticResolver

    out = out or sys.stdout
    resolver = StaticResolver.from_file(args.names) if args.names else None
    emit = (lambda r: out.write(r.to_json() + "\n")) if args.json else \
        (lambda r: out.write(str(r) + "\n"))
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    with L7Monitor(args.iface, dns_ports=tuple(args.dns_port or (53,)),
                   http_ports=tuple(args.http_port or (80, 8000, 8080)),
                   snaplen=args.snaplen, h2_any_port=args.h2_any_port,
                   resolver=resolver) as mon:
        try:
            while deadline is None or time.monotonic() < deadline:
                left = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
                for r in mon.poll(timeout=left):
                    emit(r)
                out.flush()
        except KeyboardInterrupt:
            pass
        for r in mon.flush():
            emit(r)
        stats = mon.stats()
    out.flush()
    print("l7: %s" % ", ".join("%s=%d" % kv for kv in stats.to_dict().items()), file=sys.stderr)
    return 0


def add_parser(subparsers):
    """Add the ``l7`` command to an argparse subparsers object; it sets
    ``func`` returning an exit status."""
    p = subparsers.add_parser("l7", help="DNS/HTTP requests with latency at TC (L7 monitor)",
                              description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("iface", nargs="+", help="interface name(s)")
    p.add_argument("--json", action="store_true", help="JSON lines")
    p.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    p.add_argument("--dns-port", type=int, action="append", metavar="P",
                   help="DNS port (repeatable; default 53)")
    p.add_argument("--http-port", type=int, action="append", metavar="P",
                   help="HTTP port (repeatable; default 80, 8000, 8080)")
    p.add_argument("--snaplen", type=int, default=256, metavar="N",
                   help="payload bytes sampled per packet (1..512)")
    p.add_argument("--h2-any-port", action="store_true",
                   help="detect the HTTP/2 preface on every TCP port")
    p.add_argument("--names", metavar="FILE",
                   help="name addresses from FILE ('CIDR-or-IP name' lines or TOML [names])")
    p.set_defaults(func=cmd_l7)
    return p
