"""``pybpfnet ct``: the BPF connection tracker from the command line.

  pybpfnet ct run IFACE       track an interface (TC ingress + egress) until Ctrl-C
  pybpfnet ct list [--json]   list connections, like ``conntrack -L``
  pybpfnet ct watch [--json]  stream events, like ``conntrack -E``
  pybpfnet ct stats [--json]  counters and table occupancy, like ``conntrack -S``

``list``, ``watch`` and ``stats`` read a tracker loaded by any process
(``ct run``, a Python program using ``pybpfnet.Conntrack``, a firewall or a
load balancer built with pybn_conntrack.h), found by its maps; with several
running, ``--map-id`` picks one (``ct list`` names them). Needs root
(CAP_BPF, CAP_SYS_ADMIN to open objects by id, CAP_NET_ADMIN to attach).
"""

import argparse
import json
import signal
import sys
import time


def _filters(args):
    out = {}
    for name in ("protocol", "src", "dst", "sport", "dport", "port", "address", "family"):
        v = getattr(args, name, None)
        if v is not None:
            out[name] = v
    if getattr(args, "state", None):
        out["state"] = args.state.split(",")
    return out


def _add_filters(p):
    f = p.add_argument_group("filters (conntrack -L style)")
    f.add_argument("-p", "--protocol", help="tcp, udp, icmp, icmpv6 or a number")
    f.add_argument("-s", "--src", help="original source address or network")
    f.add_argument("-d", "--dst", help="original destination address or network")
    f.add_argument("--sport", type=int, help="original source port (ICMP: echo id)")
    f.add_argument("--dport", type=int, help="original destination port")
    f.add_argument("--port", type=int, help="either port, either direction")
    f.add_argument("--address", help="either address, either direction (or a network)")
    f.add_argument("-f", "--family", type=int, choices=(4, 6))
    f.add_argument("--state", help="states, comma-separated (e.g. ESTABLISHED,TIME_WAIT)")


def _open(args):
    from pybpfnet.dataplanes.conntrack import Conntrack
    return Conntrack.from_map_id(args.map_id)


def cmd_list(args):
    """List tracked connections (conntrack -L)."""
    with _open(args) as ct:
        conns = sorted(ct.entries(**_filters(args)), key=lambda c: (c.protocol, c.first_seen))
    if args.json:
        json.dump([c.to_dict() for c in conns], sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        for c in conns:
            print(c.format())
        print("pybpfnet ct: %d flow entries have been shown." % len(conns), file=sys.stderr)
    return 0


def cmd_watch(args):
    """Print connection events as they happen (conntrack -E)."""
    from pybpfnet.dataplanes.conntrack import EventType, _Filter
    flt = _Filter(**_filters(args))
    kinds = {EventType[k.strip().upper()] for k in args.event.split(",")} if args.event \
        else set(EventType)
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    stop = []
    old = signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    try:
        with _open(args) as ct:
            stream = ct.events()
            if not args.backlog:
                stream.poll(0)          # like conntrack -E: from now on
            while not stop:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                for ev in stream.poll(0.2 if left is None else min(0.2, left)):
                    if ev.type not in kinds or not flt(ev.connection):
                        continue
                    if args.json:
                        print(json.dumps(ev.to_dict()), flush=True)
                    else:
                        print(ev.format(), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
    return 0


def cmd_stats(args):
    """Counters and table occupancy (conntrack -S)."""
    with _open(args) as ct:
        s = ct.stats()
    if args.json:
        json.dump(s.to_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        for k, v in s.to_dict().items():
            print("%-20s %d" % (k, v))
    return 0


def cmd_run(args):
    """Track IFACE (TC ingress and egress) until Ctrl-C or --seconds, sweeping
    expired connections every --sweep seconds."""
    from pybpfnet.dataplanes.conntrack import Conntrack, ConntrackOptions, Timeouts
    timeouts = {"default": Timeouts(), "nf_conntrack": Timeouts.nf_conntrack(),
                "cilium": Timeouts.cilium()}[args.timeouts]
    opts = ConntrackOptions(max_entries=args.max_entries,
                            embryonic_entries=args.embryonic_entries, timeouts=timeouts,
                            drop_invalid=args.drop_invalid)
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    stop = []
    old = signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    try:
        with Conntrack(opts) as ct:
            for iface in args.iface:
                ct.attach(iface)
            print("pybpfnet ct: tracking %s (ct_established map id %d); Ctrl-C stops" % (
                ", ".join(args.iface), ct.established.id), file=sys.stderr, flush=True)
            stream = ct.events() if args.events else None
            next_sweep = time.monotonic() + args.sweep
            while not stop:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if now >= next_sweep:
                    ct.sweep()
                    next_sweep = now + args.sweep
                wait = max(0.0, min(next_sweep, deadline or next_sweep) - now)
                if stream is not None:
                    for ev in stream.poll(min(wait, 0.5)):
                        print(ev.format(), flush=True)
                else:
                    time.sleep(min(wait, 0.5))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
    return 0


def add_parser(subparsers):
    """Add the ``ct`` command (and its subcommands) to an argparse
    subparsers object; each sets ``func`` returning an exit status."""
    ct = subparsers.add_parser("ct", help="BPF connection tracking: run, list, watch, stats",
                               description=__doc__.split("\n\n")[0],
                               epilog=__doc__.split("\n\n", 1)[1],
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ct.add_subparsers(dest="ct_command", metavar="SUBCOMMAND")
    ct.set_defaults(func=lambda args: ct.print_help() or 2)

    def common(p):
        p.add_argument("--map-id", type=int, help="the tracker's ct_established map id")
        p.add_argument("--json", action="store_true", help="JSON output")

    r = sub.add_parser("run", help=cmd_run.__doc__.split("\n")[0], description=cmd_run.__doc__)
    r.add_argument("iface", nargs="+", help="interface(s) of this network namespace")
    r.add_argument("--max-entries", type=int, default=65536, help="established table size")
    r.add_argument("--embryonic-entries", type=int, default=16384,
                   help="embryonic table size (new, half-open, unanswered)")
    r.add_argument("--timeouts", choices=("default", "nf_conntrack", "cilium"),
                   default="default", help="timeout set (see docs/conntrack.md)")
    r.add_argument("--sweep", type=float, default=5.0, metavar="S",
                   help="seconds between sweeps of expired entries (default 5)")
    r.add_argument("--drop-invalid", action="store_true", help="drop INVALID packets")
    r.add_argument("--events", action="store_true", help="print events while running")
    r.add_argument("--seconds", type=float, help="stop after this long")
    r.set_defaults(func=cmd_run)

    ls = sub.add_parser("list", help=cmd_list.__doc__, description=cmd_list.__doc__)
    common(ls)
    _add_filters(ls)
    ls.set_defaults(func=cmd_list)

    w = sub.add_parser("watch", help=cmd_watch.__doc__, description=cmd_watch.__doc__)
    common(w)
    _add_filters(w)
    w.add_argument("-e", "--event", help="event types, comma-separated: new,update,destroy")
    w.add_argument("--seconds", type=float, help="stop after this long")
    w.add_argument("--backlog", action="store_true",
                   help="also print the events already waiting in the ring")
    w.set_defaults(func=cmd_watch)

    st = sub.add_parser("stats", help=cmd_stats.__doc__, description=cmd_stats.__doc__)
    common(st)
    st.set_defaults(func=cmd_stats)
    return ct

