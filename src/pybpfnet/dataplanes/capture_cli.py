"""``pybpfnet capture``: capture packets at TC with a filter evaluated in
BPF, print one line per packet or write a pcap file.

    pybpfnet capture [-w FILE | -w -] [-c COUNT] [--duration S] [-s SNAPLEN]
                     [--direction both|ingress|egress] [--xdp] [--netns NAME]
                     [--filter EXPR] IFACE [IFACE ...] [EXPRESSION ...]

The filter is a tcpdump-like expression (see docs/capture.md), given with
``--filter`` or as the words after the interfaces: the first word that is
a filter keyword (host, net, port, src, dst, tcp, udp, sctp, icmp, icmp6,
ip, ip6, proto, not, '(' or '!') starts it. Options go before the interfaces (as with tcpdump, the
expression comes last). ``-w -`` writes pcap to
stdout (``pybpfnet capture eth0 -w - | tshark -r -``). At the end the
counters go to stderr. Needs root (CAP_BPF + CAP_NET_ADMIN; CAP_SYS_ADMIN
with --netns).
"""

import argparse
import sys

__all__ = ["add_parser", "cmd_capture", "split_interfaces"]

_FILTER_START = frozenset(("host", "net", "port", "src", "dst", "tcp", "udp", "sctp", "icmp",
                           "icmp6", "ip", "ip6", "proto", "not", "(", "!"))


def split_interfaces(words):
    """(interfaces, expression words): the expression starts at the first
    word that is a filter keyword or begins with '(' or '!'."""
    for i, w in enumerate(words):
        if w.lower() in _FILTER_START or w.startswith(("(", "!")):
            return list(words[:i]), list(words[i:])
    return list(words), []


def cmd_capture(args, out=None):
    """Capture packets on interfaces; print them or write pcap."""
    from pybpfnet.dataplanes.capture import Capture

    ifaces, words = split_interfaces(args.iface)
    if not ifaces:
        raise ValueError("capture: give at least one interface before the filter expression")
    if words and args.filter:
        raise ValueError("capture: give the filter either with --filter or as words, not both")
    expr = args.filter if args.filter else (" ".join(words) or None)
    if args.xdp:
        if args.direction == "egress":
            raise ValueError("capture: --xdp sees ingress only")
        directions = ("ingress",)
    else:
        directions = ("ingress", "egress") if args.direction == "both" else (args.direction,)
    with Capture(ifaces, filter=expr, snaplen=args.snaplen, directions=directions,
                 ring_size=args.ring_size, netns=args.netns,
                 hook="xdp" if args.xdp else "tc") as cap:
        if args.write:
            if args.write == "-":
                dest = out.buffer if out is not None and hasattr(out, "buffer") else \
                    (out if out is not None else sys.stdout.buffer)
            else:
                dest = args.write
            n = cap.write_pcap(dest, count=args.count, duration=args.duration)
            if args.write != "-":
                print("pybpfnet capture: %d packets written to %s" % (n, args.write),
                      file=sys.stderr)
        else:
            out = out or sys.stdout
            try:
                for pkt in cap.packets(args.count, args.duration):
                    out.write(str(pkt) + "\n")
                    out.flush()
            except KeyboardInterrupt:
                pass
        stats = cap.stats()
    print("pybpfnet capture: %s" % ", ".join("%s=%d" % kv for kv in stats.to_dict().items()),
          file=sys.stderr)
    return 0


def add_parser(subparsers):
    """Add the ``capture`` command to an argparse subparsers object; it sets
    ``func`` returning an exit status."""
    p = subparsers.add_parser("capture", help="capture packets at TC with a BPF filter (pcap)",
                              description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("iface", nargs="+", metavar="IFACE",
                   help="interface name(s), then optionally the filter expression's words")
    p.add_argument("--filter", "-f", metavar="EXPR", help="filter expression")
    p.add_argument("-w", "--write", metavar="FILE", help="write pcap to FILE ('-': stdout)")
    p.add_argument("-c", "--count", type=int, metavar="N", help="stop after N packets")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("-s", "--snaplen", type=int, default=262, metavar="N",
                   help="bytes kept of each packet (default 262, at most 16384)")
    p.add_argument("--direction", choices=("both", "ingress", "egress"), default="both")
    p.add_argument("--xdp", action="store_true",
                   help="capture at XDP (ingress only, Linux >= 5.18) instead of TC")
    p.add_argument("--netns", metavar="NAME",
                   help="the interfaces are in this network namespace (/run/netns/NAME)")
    p.add_argument("--ring-size", type=int, default=1 << 22, metavar="BYTES",
                   help="ring buffer size (a power of two)")
    p.set_defaults(func=cmd_capture)
    return p
