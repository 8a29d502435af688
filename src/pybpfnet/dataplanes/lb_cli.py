"""``pybpfnet lb``: run the Maglev L4 load balancer from a TOML file.

    pybpfnet lb apply lb.toml [--iface eth0] [--xdp-mode native]
    pybpfnet lb run lb.toml [--iface eth0] [--every 2] [--duration S]
    pybpfnet lb status [--iface eth0] [--json]
    pybpfnet lb drain SERVICE BACKEND [--iface eth0]
    pybpfnet lb weight SERVICE BACKEND WEIGHT [--iface eth0]
    pybpfnet lb remove [--iface eth0]

``apply`` loads the LB (or updates the one already on the interface) and
pins it under /sys/fs/bpf/pybpfnet/lb/<netns>-<iface>/: it keeps
balancing after the command exits, with every backend taken as healthy.
Health checks need a process: ``run`` applies the file, then checks the
backends in the foreground (taking failing ones out of the tables and
putting them back) and prints the status every few seconds until Ctrl-C
or --duration; the LB stays when it stops. ``status``, ``drain``,
``weight`` and ``remove`` work on the pinned LB from any process. Needs
root (CAP_BPF + CAP_NET_ADMIN).
"""

import argparse
import json
import os
import signal
import sys
import threading
import time

from pybpfnet.dataplanes import _pins

PIN_ROOT = "/sys/fs/bpf/pybpfnet/lb"

__all__ = ["add_parser", "pin_dir", "PIN_ROOT"]


def pin_dir(iface, root=PIN_ROOT):
    """Where the LB of ``iface`` (in the calling thread's network namespace)
    is pinned."""
    return _pins.pin_dir(root, iface)


def _one(iface):
    """The pin dir of the LB on ``iface``, or of the only LB here."""
    found = _pins.pinned(PIN_ROOT)
    if iface is not None:
        if iface not in found:
            raise FileNotFoundError("no load balancer on %s (pybpfnet lb apply CONFIG "
                                    "--iface %s)" % (iface, iface))
        return iface, found[iface]
    if not found:
        raise FileNotFoundError("no load balancer in this network namespace "
                                "(pybpfnet lb apply CONFIG --iface IFACE)")
    if len(found) > 1:
        raise ValueError("load balancers on %s: say which with --iface" % ", ".join(found))
    return next(iter(found.items()))


def _apply(args):
    """Apply the config file; returns an open LoadBalancer handle (pinned)."""
    from pybpfnet.dataplanes.lb import LoadBalancer, load_config
    config = load_config(args.config)            # a bad file stops here
    iface = args.iface or config.interface
    if iface is None:
        raise ValueError("no interface: give --iface or set interface in [lb]")
    path = pin_dir(iface)
    if os.path.isdir(path):
        lb = LoadBalancer.open_pinned(path)
        try:
            lb.apply(config)
        except BaseException:
            lb.close()
            raise
        what = "updated the load balancer on"
    else:
        lb = LoadBalancer(iface, config, health_checks=False, xdp_mode=args.xdp_mode)
        try:
            lb.pin(path)
        except BaseException:
            lb.close()
            raise
        what = "attached a load balancer to"
    n = sum(len(s.backends) for s in config.services)
    print("%s %s: %d services, %d backends" % (what, iface, len(config.services), n))
    return lb


def cmd_apply(args):
    """Load (or update) the LB from a config file and pin it: it keeps
    running after this command exits."""
    _apply(args).close()
    return 0


def cmd_run(args):
    """Apply a config file, then run its health checks in the foreground,
    printing the status; Ctrl-C stops the checks (the LB stays)."""
    lb = _apply(args)
    stop = threading.Event()
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if threading.current_thread() is threading.main_thread():
            old[sig] = signal.signal(sig, lambda *a: stop.set())
    try:
        lb.on_event = lambda ev: print(ev, flush=True)
        lb.start_health_checks()
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while not stop.is_set():
            wait = args.every
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    break
            if stop.wait(wait):
                break
            print(lb.status().table(), flush=True)
        return 0
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        lb.close()


def cmd_status(args):
    """Services, backends, health, Maglev shares and per-backend traffic."""
    from pybpfnet.dataplanes.lb import LoadBalancer
    found = _pins.pinned(PIN_ROOT)
    if args.iface is not None:
        found = dict([_one(args.iface)])
    out = {}
    for iface, path in found.items():
        with LoadBalancer.open_pinned(path) as lb:
            out[iface] = lb.status()
    if args.json:
        json.dump({iface: st.to_dict() for iface, st in out.items()}, sys.stdout, indent=2)
        print()
        return 0
    if not out:
        print("no load balancers")
    for iface, st in out.items():
        print("load balancer on %s" % iface)
        print(st.table())
    return 0


def cmd_drain(args):
    """Drain a backend: no new flows, established ones finish."""
    from pybpfnet.dataplanes.lb import LoadBalancer
    iface, path = _one(args.iface)
    with LoadBalancer.open_pinned(path) as lb:
        lb.drain(args.service, args.backend)
        slots = lb.maglev(args.service).balance()
    print("drained %s/%s on %s; table now %s" % (args.service, args.backend, iface, ", ".join(
        "%s %d" % kv for kv in slots.items())))
    return 0


def cmd_weight(args):
    """Set a backend's weight (0 drains it)."""
    from pybpfnet.dataplanes.lb import LoadBalancer
    iface, path = _one(args.iface)
    with LoadBalancer.open_pinned(path) as lb:
        lb.set_weight(args.service, args.backend, args.weight)
    print("%s/%s on %s: weight %d" % (args.service, args.backend, iface, args.weight))
    return 0


def cmd_remove(args):
    """Detach and unload the LB of an interface."""
    from pybpfnet.dataplanes.lb import LoadBalancer
    iface, path = _one(args.iface)
    LoadBalancer.open_pinned(path).remove()
    _pins.prune(PIN_ROOT)
    print("removed the load balancer of %s" % iface)
    return 0


def add_parser(subparsers):
    """Add the ``lb`` command (and its subcommands) to an argparse
    subparsers object; each sets ``func`` returning an exit status."""
    lb = subparsers.add_parser("lb", help="Maglev L4 load balancer: apply, run, status, "
                               "drain", description=__doc__.split("\n\n")[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = lb.add_subparsers(dest="lb_command", metavar="SUBCOMMAND")
    lb.set_defaults(func=lambda args: lb.print_help() or 2)

    def with_config(p):
        p.add_argument("config", help="TOML configuration file (see docs/lb.md)")
        p.add_argument("--iface", help="interface (default: [lb] interface of the file)")
        p.add_argument("--xdp-mode", choices=("native", "generic", "auto"), default="native",
                       help="XDP mode (default: native)")

    a = sub.add_parser("apply", help=cmd_apply.__doc__, description=cmd_apply.__doc__)
    with_config(a)
    a.set_defaults(func=cmd_apply)

    r = sub.add_parser("run", help=cmd_run.__doc__, description=cmd_run.__doc__)
    with_config(r)
    r.add_argument("--every", type=float, default=2.0, metavar="SECONDS",
                   help="print the status this often (default: 2)")
    r.add_argument("--duration", type=float, metavar="SECONDS",
                   help="stop after this long (default: until Ctrl-C)")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help=cmd_status.__doc__, description=cmd_status.__doc__)
    s.add_argument("--iface", help="only this interface")
    s.add_argument("--json", action="store_true", help="JSON output")
    s.set_defaults(func=cmd_status)

    d = sub.add_parser("drain", help=cmd_drain.__doc__, description=cmd_drain.__doc__)
    d.add_argument("service")
    d.add_argument("backend")
    d.add_argument("--iface", help="interface (needed when several LBs run here)")
    d.set_defaults(func=cmd_drain)

    w = sub.add_parser("weight", help=cmd_weight.__doc__, description=cmd_weight.__doc__)
    w.add_argument("service")
    w.add_argument("backend")
    w.add_argument("weight", type=int)
    w.add_argument("--iface", help="interface (needed when several LBs run here)")
    w.set_defaults(func=cmd_weight)

    m = sub.add_parser("remove", help=cmd_remove.__doc__, description=cmd_remove.__doc__)
    m.add_argument("--iface", help="interface (needed when several LBs run here)")
    m.set_defaults(func=cmd_remove)
    return lb
